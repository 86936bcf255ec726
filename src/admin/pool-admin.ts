import { badRequest, conflict, notFound } from '../errors.js';
import { poolHandsOut, poolIngests, type PoolGate } from '../pool/pool-gate.js';
import type { Topology } from '../peers/topology.js';
import type { PoolView } from '../schemas/admin-pools.js';
import type { Db } from '../store/db.js';
import { availableBlocks } from '../store/pool.js';
import { changePoolState, loadPoolStates, PoolChangeError, recordOutageDrill, type PoolChange, type PoolStateRow } from '../store/pool-states.js';
import type { ChangeActor } from '../store/principals.js';
import type { Logger } from '../log.js';
import { canDrillOutage, type LinkSource } from '../sources/link-source.js';

/**
 * What operators do to pools (the admin API's /admin/v1/pools, `kms pool …`), framework-free. A change is in this
 * process's gate before the answer leaves (the next key request sees it); other replicas when the coordinator tells them, or at their next poll.
 */
export class PoolAdmin {
  constructor(
    private readonly deps: {
      db: Db;
      gate: PoolGate;
      topology: Topology;
      minDeletionWaitSeconds: number;
      /** This KME's end of each link, for outage drills. */
      sources: ReadonlyMap<string, LinkSource>;
      log: Logger;
      /** Tells the other replicas that a pool's state changed (the coordinator's publish). */
      announce?: (topic: 'pools') => Promise<void>;
    },
  ) {}

  /**
   * A fault drill: this KME's simulated device of the link goes down for `seconds` (no new material from it; what
   * the pool holds is still served). The pool's state does not change. Audited before the cut, so no drill goes
   * unrecorded. A real device is refused: it must be cut where it is.
   */
  async outage(linkId: string, seconds: number, by: ChangeActor): Promise<{ link_id: string; seconds: number; down_until: string }> {
    const source = this.deps.sources.get(linkId);
    if (!source || !this.deps.topology.link(linkId)) throw notFound(`link ${linkId} has no pool at this KME`);
    if (!canDrillOutage(source)) {
      throw badRequest(`link ${linkId} is fed by a real device (${source.description}): an outage drill only cuts a simulated link; cut a real one at its device or fibre`);
    }
    const downUntil = new Date(Date.now() + seconds * 1000);
    await recordOutageDrill(this.deps.db, linkId, seconds, downUntil, by);
    source.outage(seconds * 1000);
    this.deps.log.warn({ link: linkId, seconds, down_until: downUntil.toISOString(), by: by.actor }, 'outage drill: simulated QKD link taken down by an operator');
    return { link_id: linkId, seconds, down_until: downUntil.toISOString() };
  }

  async list(): Promise<PoolView[]> {
    const rows = (await loadPoolStates(this.deps.db)).filter((r) => this.deps.topology.link(r.linkId));
    return Promise.all(rows.map((r) => this.view(r)));
  }

  async show(linkId: string): Promise<PoolView> {
    const row = (await loadPoolStates(this.deps.db)).find((r) => r.linkId === linkId);
    if (!row || !this.deps.topology.link(linkId)) throw notFound(`link ${linkId} has no pool at this KME`);
    return this.view(row);
  }

  async change(linkId: string, change: PoolChange, by: ChangeActor, opts: { reason?: string; waitSeconds?: number } = {}): Promise<PoolView> {
    if (!this.deps.topology.link(linkId)) throw notFound(`link ${linkId} has no pool at this KME`);
    let deleteAt: Date | undefined;
    if (change === 'schedule_deletion') {
      const wait = opts.waitSeconds!;
      if (wait < this.deps.minDeletionWaitSeconds) {
        throw badRequest(`wait_seconds must be at least ${this.deps.minDeletionWaitSeconds} (admin.min_pool_deletion_wait_seconds of this KME)`);
      }
      deleteAt = new Date(Date.now() + wait * 1000);
    }
    try {
      const row = await changePoolState(this.deps.db, linkId, change, by, { ...(opts.reason ? { reason: opts.reason } : {}), ...(deleteAt ? { deleteAt } : {}) });
      this.deps.gate.set(row);
      await this.deps.announce?.('pools');
      return this.view(row);
    } catch (err) {
      if (err instanceof PoolChangeError) throw err.kind === 'not_found' ? notFound(err.message) : conflict(err.message);
      throw err;
    }
  }

  private async view(r: PoolStateRow): Promise<PoolView> {
    const link = this.deps.topology.link(r.linkId)!;
    return {
      link_id: r.linkId,
      state: r.state,
      ...(r.deleteAt ? { delete_at: r.deleteAt.toISOString() } : {}),
      changed_at: r.changedAt.toISOString(),
      ...(link.peerKmeId ? { peer_kme_id: link.peerKmeId } : {}),
      role: link.role,
      available_blocks: await availableBlocks(this.deps.db, r.linkId),
      block_bits: link.blockBits,
      hands_out: poolHandsOut(r.state),
      ingests: poolIngests(r.state),
    };
  }
}

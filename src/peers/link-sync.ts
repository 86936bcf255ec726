import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { PeerRoom } from '../pool/ownership.js';
import type { Sync } from '../schemas/peer.js';
import { withTransaction, type Db } from '../store/db.js';
import { destroyPeerCopies } from '../store/keys.js';
import { poolCounts } from '../store/pool.js';
import type { InFlight } from './in-flight.js';
import type { PeerClient } from './peer-client.js';
import type { LinkInfo, Topology } from './topology.js';
import { Repeater } from '../lifecycle/repeater.js';

/** What this KME knows of a paired link's far end, from the last exchange. */
export interface LinkState {
  /** The last exchange succeeded recently enough. */
  up: boolean;
  lastSyncAt?: number;
  /** Why the link cannot be used although the peer answers (its parameters differ from ours). */
  misconfigured?: string;
  /** Blocks the peer could deliver now towards each KME beyond it. */
  reach: Map<string, number>;
}

/**
 * Exchanges a small message with the peer of every paired link, both ways, every interval:
 * - the link's parameters (block size, primary): a mismatch makes the link unusable, loudly;
 * - room (how much more material each end can own): the primary splits new material by it;
 * - the ownership watermark: below it the sender owns no live material, so the receiver destroys its unreserved
 *   copies of the sender's positions there — material the owner spent without reserving it here (a relay that
 *   failed before it arrived, a reservation that expired before it was sent). Only copies stored longer ago than
 *   `gcAgeMs` are touched, so a watermark that overtakes an announcement still on its way cannot hit fresh material;
 * - reach: what each end could deliver now towards the KMEs beyond it, for status figures of relayed pairs;
 * - liveness: status reports a link whose peer does not answer as having nothing deliverable.
 */
export class LinkSync {
  private readonly states = new Map<string, LinkState>();
  private readonly loop = new Repeater(async () => {
    await this.round();
    return this.deps.intervalMs;
  });

  constructor(
    private readonly deps: {
      db: Db;
      topology: Topology;
      clients: Map<string, PeerClient>;
      inFlight: InFlight;
      peerRooms: Map<string, PeerRoom>;
      maxBlocks: number;
      intervalMs: number;
      gcAgeMs: number;
      log: Logger;
    },
  ) {
    for (const l of deps.topology.links) if (l.peerKmeId) this.states.set(l.linkId, { up: false, reach: new Map() });
  }

  state(linkId: string): LinkState | undefined {
    return this.states.get(linkId);
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** This end's message for a link. */
  async message(link: LinkInfo): Promise<Sync> {
    const { db, topology } = this.deps;
    const { rows } = await db.query(
      `SELECT LEAST((SELECT min(first_seq + next_free) FROM key_chunk WHERE link_id = $1 AND owned AND NOT set_aside AND next_free < blocks),
                    (SELECT min(lower(seqs)) FROM qkd_key WHERE link_id = $1 AND state = 'RESERVED' AND origin_kme_id = $2))::text AS live,
              (SELECT next_seq FROM link WHERE link_id = $1)::text AS next`,
      [link.linkId, topology.kmeId],
    );
    const r = rows[0] as { live: string | null; next: string | null };
    let watermark = r.live ?? r.next;
    const held = this.deps.inFlight.lowest(link.linkId);
    if (held !== undefined && (watermark === null || held < BigInt(watermark))) watermark = String(held);
    const counts = await poolCounts(db, link.linkId);
    return {
      kme_id: topology.kmeId,
      block_bits: link.blockBits,
      primary_kme_id: link.role === 'primary' ? topology.kmeId : link.peerKmeId!,
      watermark,
      room: Math.max(0, this.deps.maxBlocks - counts.available - counts.ingested),
      reach: await this.reachFor(link.peerKmeId!),
    };
  }

  /** Applies the peer's message for a link (from our exchange or from the peer's). */
  async apply(link: LinkInfo, peer: Sync): Promise<void> {
    const state = this.states.get(link.linkId)!;
    const expectedPrimary = link.role === 'primary' ? this.deps.topology.kmeId : link.peerKmeId;
    const problem =
      peer.kme_id !== link.peerKmeId
        ? `the peer says it is ${peer.kme_id}, not ${link.peerKmeId}`
        : peer.block_bits !== link.blockBits
          ? `block size differs: ${peer.block_bits} bits there, ${link.blockBits} here (keys.key_size)`
          : peer.primary_kme_id !== expectedPrimary
            ? `the ends disagree on the primary: ${peer.primary_kme_id} there, ${expectedPrimary} here (links[].primary_kme_id)`
            : undefined;
    if (problem !== state.misconfigured) {
      if (problem) this.deps.log.error({ link: link.linkId, peer: link.peerKmeId, problem }, 'link misconfigured: not used until fixed');
      else if (state.misconfigured) this.deps.log.info({ link: link.linkId }, 'link configuration agrees again');
    }
    state.misconfigured = problem;
    if (problem) return;
    state.reach = new Map(peer.reach.map((r) => [r.kme_id, r.blocks]));
    if (link.role === 'primary') this.deps.peerRooms.get(link.linkId)?.report(peer.room);
    if (peer.watermark !== null) {
      const storedBefore = new Date(Date.now() - this.deps.gcAgeMs);
      await withTransaction(this.deps.db, (c) =>
        destroyPeerCopies(c, link.linkId, { below: peer.watermark!, storedBefore }, (n) =>
          auditBody({
            operation: 'void',
            outcome: 'ok',
            actor: `kme:${peer.kme_id}`,
            detail: { reason: 'spent by its owner (ownership watermark)', link_id: link.linkId, blocks: n, below: peer.watermark },
          }),
        ),
      );
    }
  }

  /** Marks the link as answering now (the peer called us, or answered our call). */
  seen(linkId: string): void {
    const state = this.states.get(linkId);
    if (!state) return;
    if (!state.up) this.deps.log.info({ link: linkId }, 'link up: the peer answers');
    state.up = true;
    state.lastSyncAt = Date.now();
  }

  private async round(): Promise<void> {
    await Promise.all(this.deps.topology.links.filter((l) => l.peerKmeId).map((l) => this.exchange(l)));
    const stale = Date.now() - 3 * this.deps.intervalMs;
    for (const [linkId, state] of this.states) {
      if (state.up && (state.lastSyncAt ?? 0) < stale) {
        state.up = false;
        this.deps.log.warn({ link: linkId }, 'link down: the peer does not answer');
      }
    }
  }

  private async exchange(link: LinkInfo): Promise<void> {
    const client = this.deps.clients.get(link.peerKmeId!);
    if (!client) return;
    try {
      const reply = await client.post<Sync>(`/peer/v1/links/${encodeURIComponent(link.linkId)}/sync`, await this.message(link));
      this.seen(link.linkId);
      await this.apply(link, reply);
    } catch (err) {
      this.deps.log.debug({ err: { message: (err as Error).message }, link: link.linkId }, 'link sync failed');
    }
  }

  /** What this KME could carry now towards every KME it reaches, except back through `towards`. */
  private async reachFor(towards: string): Promise<Sync['reach']> {
    const { topology } = this.deps;
    const out: Sync['reach'] = [];
    const direct = new Map<string, number>();
    for (const p of topology.peerList) {
      const link = topology.linkTo(p.kme_id);
      if (!link || p.kme_id === towards) continue;
      const up = this.states.get(link.linkId)?.up ?? false;
      direct.set(p.kme_id, up ? (await poolCounts(this.deps.db, link.linkId)).available : 0);
    }
    for (const [kme, blocks] of direct) out.push({ kme_id: kme, blocks });
    // KMEs beyond a peer: what that peer reported, capped by what we can carry to it.
    for (const [peer, blocks] of direct) {
      const link = topology.linkTo(peer)!;
      for (const [far, farBlocks] of this.states.get(link.linkId)?.reach ?? []) {
        if (far === topology.kmeId || far === towards || direct.has(far) || topology.nextHop(far) !== peer) continue;
        out.push({ kme_id: far, blocks: Math.min(blocks, farBlocks) });
      }
    }
    return out;
  }
}

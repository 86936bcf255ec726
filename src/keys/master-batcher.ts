import type { Barrier } from '../barrier/barrier.js';
import { IntegrityFailures } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import { unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { Forwarder } from '../peers/forwarder.js';
import { voidEverywhere } from '../peers/void-keys.js';
import { withTransaction, type Db } from '../store/db.js';
import { settleForwarded } from '../store/keys.js';
import { DeadlinePassedError } from '../store/errors.js';
import { setAsideChunks } from '../store/pool.js';
import { integrityVerdict, KEK_SUSPECT } from './integrity.js';
import { GroupCommitQueue, type Pending as GroupPending } from './group-commit.js';
import { reserveAtOrigin, type DeliveredKey, type MasterRequest, type Reserved } from './origin-reserve.js';
import { serveByFallback } from './fallback-reserve.js';
import type { FallbackState } from './fallback-state.js';
import type { KeyOrigin } from './key-origin.js';
import type { PeerKemKeys } from '../peers/peer-kem-keys.js';

export type { DeliveredKey, MasterRequest } from './origin-reserve.js';

/** A request's keys, and where their material came from. */
export interface Delivery {
  keys: DeliveredKey[];
  origin: KeyOrigin;
}

type Pending = GroupPending<MasterRequest, Delivery>;

/**
 * Group commit for Get key (src/keys/group-commit.ts), one queue per material link: concurrent requests share one
 * claim, one write, one commit — and, for keys whose slaves sit at other KMEs, one round trip per next hop — with one
 * audit event per request.
 *
 * Each request is all-or-nothing: all its keys or a 503. Keys for slaves at other KMEs are answered only after
 * every KME on their way confirmed (ETSI GS QKD 020: no key is released before it reached every target); when one
 * fails or does not answer in time, the keys are voided here and at every peer that may hold them.
 *
 * Bounded: at most `maxQueued` requests wait per link (more get a 503 at once), and a request still queued at its
 * deadline gets a 503 and takes nothing. A request whose client went away or whose deadline passed while its
 * peers were asked is not delivered: its reserved keys are voided (burned, never handed out).
 */
export class MasterDeliveryBatcher {
  private readonly queue: GroupCommitQueue<MasterRequest, Delivery>;

  constructor(
    private readonly deps: {
      db: Db;
      barrier: Barrier;
      kmeId: string;
      forwarder: Forwarder;
      keyTtlMs: number;
      log: Logger;
      /**
       * Concurrent transactions per link (each holds one pooled connection while it runs). Default 2: measured on
       * the bench, fewer and larger transactions serve more requests than many small ones, since most of a
       * transaction's cost is per statement and per commit (1,700–2,000 req/s with 2, 800 with 8).
       */
      maxInFlight?: number;
      /** Upper bound on the blocks one transaction claims, to keep transactions short. */
      maxBlocksPerBatch?: number;
      maxQueued: number;
      /**
       * The link-failure fallback: requests that allow it (`MasterRequest.fallback`) and that the QKD pool cannot
       * serve get fallback keys (src/keys/fallback-reserve.ts). None: they get a 503 like the others.
       */
      fallback?: { state: FallbackState; peerKeys: PeerKemKeys };
    },
  ) {
    this.queue = new GroupCommitQueue({
      maxInFlight: deps.maxInFlight ?? 2,
      maxQueued: deps.maxQueued,
      maxWeight: deps.maxBlocksPerBatch ?? 512,
      weight: (r) => r.number * r.blocksPerKey,
      deadline: (r) => r.deadline,
      abandoned: (r) => r.abandoned(),
      run: (linkId, batch) => this.run(linkId, batch),
      full: (linkId) => unavailable(`too many key requests waiting on link ${linkId}; try again later`),
      timedOut,
    });
  }

  deliver(request: MasterRequest): Promise<Delivery> {
    return this.queue.submit(request.plan.material.linkId, request);
  }

  private async run(linkId: string, batch: Pending[]): Promise<void> {
    let reserved: Array<Reserved | 'expired' | Error | undefined>;
    try {
      reserved = await this.reserve(linkId, batch.map((p) => p.request));
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    if (reserved.some((r) => r && r !== 'expired')) void this.deps.fallback?.state.qkdServed(linkId);
    const short = batch.flatMap((p, i) => (reserved[i] === undefined && p.request.fallback && this.deps.fallback ? [i] : []));
    if (short.length > 0) {
      const made = await serveByFallback({ ...this.deps, ...this.deps.fallback! }, linkId, short.map((i) => batch[i]!.request), timedOut);
      short.forEach((i, n) => (reserved[i] = made[n]));
    }
    const remote: number[] = [];
    batch.forEach((p, i) => {
      const r = reserved[i];
      if (r === 'expired') return p.reject(timedOut());
      if (r instanceof Error) return p.reject(r);
      if (!r) return p.reject(notEnough(p.request));
      if (p.request.plan.hops.length === 0) return p.resolve({ keys: r.keys, origin: r.origin });
      remote.push(i);
    });
    if (remote.length > 0) await this.forward(remote.map((i) => ({ pending: batch[i]!, reserved: reserved[i] as Reserved })));
  }

  /** The first transaction; blocks that fail their integrity check are set aside and the batch tried again. */
  private async reserve(linkId: string, requests: MasterRequest[]): Promise<Array<Reserved | 'expired' | undefined>> {
    const deadline = Math.min(...requests.map((r) => r.deadline));
    for (let attempt = 0; ; attempt++) {
      try {
        return await withTransaction(this.deps.db, async (c) => {
          const reserved = await reserveAtOrigin(c, this.deps, linkId, requests);
          // Past the deadline nobody is waiting for these keys any more: roll back rather than burn them.
          if (Date.now() >= deadline && reserved.some((r) => r && r !== 'expired')) throw timedOut();
          return reserved;
        });
      } catch (err) {
        if (!(err instanceof IntegrityFailures) || attempt >= 3) throw err;
        const verdict = await integrityVerdict(this.deps.db, this.deps.barrier, err);
        if (verdict !== 'material') {
          this.deps.log.error({ verdict }, KEK_SUSPECT);
          throw unavailable(`${KEK_SUSPECT} (the operator must investigate; nothing was taken)`);
        }
        const chunks = err.ids.flatMap((id) => ('firstSeq' in id ? [id] : []));
        this.deps.log.error({ chunks: chunks.map((c) => `${c.linkId}/${c.firstSeq}+${c.blocks}`) }, 'stored key material failed its integrity check: set aside');
        await setAsideChunks(this.deps.db, chunks, [
          auditBody({
            operation: 'set_aside',
            outcome: 'failed',
            actor: `kme:${this.deps.kmeId}`,
            detail: { reason: 'integrity check failed', chunks: chunks.map((c) => ({ link_id: c.linkId, first_seq: c.firstSeq, blocks: c.blocks })) },
          }),
        ]);
      }
    }
  }

  /** Asks every next hop, then delivers what every hop confirmed and voids the rest. */
  private async forward(items: Array<{ pending: Pending; reserved: Reserved }>): Promise<void> {
    const deadline = Math.min(...items.map((x) => x.pending.request.deadline));
    const whys = await this.deps.forwarder.sendGrouped(items.map((x) => x.reserved.outgoing), deadline);
    const ok: typeof items = [];
    const failed: Array<{ item: (typeof items)[number]; why: string }> = [];
    items.forEach((item, n) => {
      const r = item.pending.request;
      const why = whys[n] ?? (Date.now() >= r.deadline || r.abandoned() ? 'deadline passed or client gone' : undefined);
      if (why) failed.push({ item, why });
      else ok.push(item);
    });
    if (ok.length > 0) {
      try {
        // As in the first transaction: past the deadline the client has its 503, so the statement refuses to settle
        // (one statement on its own: it checks itself) and the keys are voided instead.
        const settleBy = Math.min(...ok.map((x) => x.pending.request.deadline));
        await settleForwarded(
          this.deps.db,
          ok.flatMap((x) => x.reserved.keyIds.map((keyId) => ({ keyId, relayedTo: x.pending.request.plan.hops.map((h) => h.peer) }))),
          true,
          ok.map((x) => this.deliveredAudit(x.pending.request, x.reserved)),
          settleBy - Date.now(),
        );
        for (const x of ok) x.pending.resolve({ keys: x.reserved.keys, origin: x.reserved.origin });
      } catch (caught) {
        const err = caught instanceof DeadlinePassedError ? timedOut() : caught;
        // The commit may or may not have happened: the master gets no key, so nobody may use these anywhere.
        for (const x of ok) failed.push({ item: x, why: `could not record the delivery: ${(err as Error).message}` });
        for (const x of ok) x.pending.reject(err);
      }
    }
    if (failed.length > 0) await this.voidFailed(failed);
  }

  private async voidFailed(failed: Array<{ item: { pending: Pending; reserved: Reserved }; why: string }>): Promise<void> {
    for (const { item, why } of failed) {
      // A client that went away is routine; a peer that failed is not.
      const level = item.pending.request.abandoned() ? 'info' : 'warn';
      this.deps.log[level]({ keys: item.reserved.keyIds.length, why }, 'keys for remote slaves voided');
    }
    await voidEverywhere(this.deps, failed.map(({ item, why }) => ({ keyIds: item.reserved.keyIds, spent: item.reserved.spent, why })));
    for (const { item, why } of failed) {
      if (item.pending.request.abandoned()) continue;
      item.pending.reject(unavailable(failureMessage(why)));
    }
  }

  private deliveredAudit(r: MasterRequest, reserved: Reserved): string {
    return auditBody({
      operation: 'deliver_master',
      outcome: 'ok',
      actor: `sae:${r.masterSaeId}`,
      actorCert: r.certSha256,
      keyIds: reserved.keyIds,
      detail: {
        link_id: r.plan.material.linkId,
        slaves: r.slaveSaeIds,
        size_bits: r.sizeBits,
        relayed_to: r.plan.hops.map((h) => h.peer),
        ...(reserved.origin === 'qkd' ? {} : { origin: reserved.origin }),
        ...(r.tags && Object.keys(r.tags).length ? { tags: r.tags } : {}),
      },
    });
  }
}

/**
 * What the master is told when a KME on the way did not take the keys: the peer's own reason when it refused them
 * (a `failed` ack: e.g. its slave is suspended there), otherwise that they could not be confirmed in time.
 */
function failureMessage(why: string): string {
  const [outcome, ...rest] = why.split(': ');
  const reason = rest.join(': ');
  if (outcome === 'failed' && reason) return `a KME on the way to the slaves refused the keys: ${reason}; nothing was delivered`;
  return `the KMEs of the slaves could not confirm the keys in time (${outcome}); nothing was delivered, try again`;
}

const timedOut = () => unavailable('key request timed out waiting for the key store; nothing was taken, try again');

function notEnough(r: MasterRequest): Error {
  return unavailable(
    `not enough key material for ${r.masterSaeId} → ${r.slaveSaeIds[0]}: requested ${r.number} key(s) of ` +
      `${r.sizeBits} bits, try again later or ask for fewer keys`,
  );
}

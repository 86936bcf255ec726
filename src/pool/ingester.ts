import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { insertIngested, nextSeq, poolCounts, storedRefs, type SealedChunkRow, type StoredRef } from '../store/pool.js';
import { chunkPieces, sealPieces } from './chunking.js';
import { DeviceUnavailableError, type DeviceKey, type LinkSource } from '../sources/link-source.js';
import { Repeater } from '../lifecycle/repeater.js';
import { splitOwnership, type PeerRoom } from './ownership.js';

export interface IngesterOptions {
  db: Db;
  barrier: Barrier;
  source: LinkSource;
  kmeId: string;
  linkId: string;
  blockBits: number;
  /** loopback: material is AVAILABLE at once; primary: INGESTED until the peer confirms it holds the same. */
  role: 'loopback' | 'primary';
  /** Pool cap in owned blocks (max_key_count): stored_key_count never exceeds it. */
  maxBlocks: number;
  maxBlocksPerBatch: number;
  /** Primary only: what the peer can still own; the split of new material follows both ends' room. */
  peerRoom?: PeerRoom;
  /** Called after each stored batch (blocks stored): link figures, and at a primary the announcer. */
  onStored?: (blocks: number) => void;
  log: Logger;
  /** Pause between polls when the device has nothing new or the pool is full. */
  idleMs?: number;
  /** While true the device is not read (an operator drains the pool or deleted it); batches taken are still stored. */
  paused?: () => boolean;
}

/** A batch taken from the device: its material and the positions it fills, sealed once and stored once. */
interface Batch {
  keys: DeviceKey[];
  firstSeq: string;
  blocks: number;
  /** Room in the pool when it was taken, less the batches taken before it and not stored yet: decides the split. */
  room: { own: number; total: number };
  /** Its sealed chunks, refs and audit event, made once (bound to its positions); remade after a failed seal. */
  sealed?: Promise<SealedBatch>;
  /** An INSERT of it was sent: after a failure, it may have committed with its reply lost. */
  attempted: boolean;
}

interface SealedBatch {
  refs: StoredRef[];
  rows: SealedChunkRow[];
  audit: string;
  owned: number;
}

/**
 * Moves material from this end's device into the pool: take, seal it through the barrier in chunks (one HSM call per
 * chunk, all of a batch's at once: src/pool/chunking.ts), store the batch with its device refs and audit event in one
 * statement, release it at the device. Stops at the pool cap and
 * resumes as keys are delivered. Survives database, HSM and device outages: it logs once, backs off and carries on.
 *
 * What it took from the device stays in memory until stored. After a failure it asks the database whether the
 * link's next position is past the batch's first (this ingester stores positions in order): an INSERT whose reply
 * was lost did commit, and the batch is done — it is never sent again (the pool would refuse the positions for good
 * and ingest would wedge).
 *
 * One ingester per link and per KME: with replicas, only on the one that holds the link's ingest lock (src/server.ts).
 */
export class Ingester {
  private readonly loop = new Repeater(() => this.tick());
  private failing = false;
  /**
   * Taken from the device, not stored yet, in position order: never lost to a failed store, never taken twice. At
   * most two: the batch being written, and the next one, taken and sealed meanwhile (the database and the HSM work
   * at the same time instead of in turn).
   */
  private pending: Batch[] = [];
  /** Taken from the device but not yet checked against the refs already stored (that check can fail too). */
  private unchecked: DeviceKey[] | undefined;
  /** The next position to give a new batch. */
  private next: bigint | undefined;

  constructor(private readonly opts: IngesterOptions) {}

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    for (const k of [...this.pending.flatMap((b) => b.keys), ...(this.unchecked ?? [])]) k.material.fill(0);
    this.pending = [];
    this.unchecked = undefined;
  }

  /**
   * Stores one batch (taking one from the device first when none is waiting), and meanwhile takes and seals the
   * next; returns how many blocks were stored (0 when the pool is full or nothing is ready).
   */
  async ingestOnce(): Promise<number> {
    if (this.pending.length === 0 && !(await this.takeBatch())) return 0;
    const batch = this.pending[0]!;
    // Both settle before this pass ends, so two passes never take from the device at once. A failure to take the
    // next batch is reported and leaves it for the next pass; this pass is about `batch`.
    const [written, taken] = await Promise.allSettled([this.write(batch), this.pending.length < 2 ? this.takeBatch() : undefined]);
    if (taken.status === 'rejected') this.failed(taken.reason);
    if (written.status === 'rejected') throw written.reason;
    const stored = written.value;
    await this.opts.source.release(batch.keys.map((k) => k.ref));
    for (const k of batch.keys) k.material.fill(0);
    this.pending.shift();
    if (taken.status === 'fulfilled') {
      if (this.failing) this.opts.log.info({ link: this.opts.linkId }, 'key ingest resumed');
      this.failing = false;
    }
    this.opts.onStored?.(stored);
    return stored;
  }

  /** Takes the next batch from the device, gives it the next positions and starts sealing it; false when there is none. */
  private async takeBatch(): Promise<boolean> {
    const { db, source, linkId } = this.opts;
    const room = await this.room();
    for (const b of this.pending) {
      room.own = Math.max(0, room.own - (await this.sealedOf(b)).owned);
      room.total = Math.max(0, room.total - b.blocks);
    }
    if (!this.unchecked) {
      if (room.total <= 0 || this.opts.paused?.()) return false;
      this.unchecked = await source.take(Math.min(room.total, this.opts.maxBlocksPerBatch));
    }
    const keys = this.unchecked;
    const already = await storedRefs(db, linkId, keys.map((k) => k.ref));
    this.unchecked = undefined;
    if (already.size > 0) {
      // Offered again after a crash between storing and releasing it: stored once is enough.
      this.opts.log.warn({ link: linkId, refs: already.size }, 'device offered keys already stored; releasing them');
      await source.release([...already]);
    }
    const fresh = keys.filter((k) => !already.has(k.ref));
    for (const k of keys) if (already.has(k.ref)) k.material.fill(0);
    if (fresh.length === 0) return false;
    this.next ??= BigInt(await nextSeq(db, linkId));
    const blocks = fresh.reduce((n, k) => n + k.blocks, 0);
    const batch: Batch = { keys: fresh, firstSeq: String(this.next), blocks, room, attempted: false };
    this.next += BigInt(blocks);
    this.pending.push(batch);
    void this.sealedOf(batch);
    return true;
  }

  private async room(): Promise<{ own: number; total: number }> {
    const counts = await poolCounts(this.opts.db, this.opts.linkId);
    const own = Math.max(0, this.opts.maxBlocks - counts.available - counts.ingested);
    const peer = this.opts.role === 'primary' ? (this.opts.peerRoom?.available(own) ?? 0) : 0;
    return { own, total: own + peer };
  }

  /** The batch sealed: made once, and again only after a failed attempt (the HSM was away). */
  private sealedOf(batch: Batch): Promise<SealedBatch> {
    if (!batch.sealed) {
      const sealing = this.seal(batch);
      sealing.catch(() => {
        if (batch.sealed === sealing) batch.sealed = undefined;
      });
      batch.sealed = sealing;
    }
    return batch.sealed;
  }

  private async seal(batch: Batch): Promise<SealedBatch> {
    const { barrier, linkId, role } = this.opts;
    const { keys, firstSeq, blocks, room } = batch;
    const owned = role === 'loopback' ? blocks : splitOwnership(blocks, room.own, room.total - room.own);
    const refs: StoredRef[] = [];
    const sealing: Array<Promise<SealedChunkRow>> = [];
    let seq = BigInt(firstSeq);
    let ownedLeft = owned;
    const blockBytes = this.opts.blockBits / 8;
    for (const k of keys) {
      const split = Math.min(k.blocks, ownedLeft);
      ownedLeft -= split;
      refs.push({ ref: k.ref, firstSeq: String(seq), blocks: k.blocks, ownerSplit: split });
      sealing.push(...sealPieces(barrier, linkId, k.material, blockBytes, chunkPieces(String(seq), k.blocks, split), true));
      seq += BigInt(k.blocks);
    }
    const rows = await Promise.all(sealing);
    const audit = auditBody({
      operation: 'ingest',
      outcome: 'ok',
      actor: `kme:${this.opts.kmeId}`,
      detail: {
        link_id: linkId,
        first_seq: firstSeq,
        last_seq: String(seq - 1n),
        blocks,
        owned,
        device_keys: keys.length,
        ...(role === 'primary' ? { awaiting_peer: true } : {}),
      },
    });
    return { refs, rows, audit, owned };
  }

  /** Stores a batch (batches are written one at a time, in position order); returns its blocks. */
  private async write(batch: Batch): Promise<number> {
    const { db, linkId, role } = this.opts;
    // After a failed attempt, the attempt may have committed with its reply lost: then the batch is stored and
    // must not be sent again. Checked only after a failure, so the normal path costs nothing.
    if (batch.attempted && BigInt(await nextSeq(db, linkId)) > BigInt(batch.firstSeq)) return batch.blocks;
    const sealed = await this.sealedOf(batch);
    batch.attempted = true;
    await insertIngested(db, linkId, role === 'loopback' ? 'AVAILABLE' : 'INGESTED', sealed.refs, sealed.rows, [sealed.audit]);
    if (role === 'primary') this.opts.peerRoom?.assign(batch.blocks - sealed.owned);
    return batch.blocks;
  }

  /** One pass; returns how long to wait before the next. */
  private async tick(): Promise<number> {
    let delay = this.opts.idleMs ?? 100;
    try {
      // A full batch means more is probably waiting: go again at once. (A smaller batch taken meanwhile waits for
      // the next pass like new material would: on a slow link, going again at once would spin on tiny batches.)
      const full = this.opts.maxBlocksPerBatch;
      if ((await this.ingestOnce()) >= full || (this.pending[0]?.blocks ?? 0) >= full) delay = 0;
    } catch (err) {
      this.failed(err);
      // Re-read the stream position when nothing holds positions: the failed statement may or may not have committed.
      if (this.pending.length === 0) this.next = undefined;
      delay = 1000;
    }
    return delay;
  }

  /** Logs the first failure of a streak (the device, the database or the HSM); the next success logs the end. */
  private failed(err: unknown): void {
    if (!this.failing) {
      const what = err instanceof DeviceUnavailableError ? 'QKD device unavailable' : 'key ingest failing';
      this.opts.log.warn({ err: { message: (err as Error).message }, link: this.opts.linkId }, `${what}; retrying`);
    }
    this.failing = true;
  }
}

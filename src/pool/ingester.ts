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
 * One ingester per link and per KME (with several replicas, a later issue runs it on the leader only).
 */
export class Ingester {
  private readonly loop = new Repeater(() => this.tick());
  private failing = false;
  /** Taken from the device, not stored yet: never lost to a failed store, never taken twice. */
  private held: { keys: DeviceKey[]; firstSeq: string; attempted: boolean } | undefined;
  private next: bigint | undefined;

  constructor(private readonly opts: IngesterOptions) {}

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    for (const k of this.held?.keys ?? []) k.material.fill(0);
    this.held = undefined;
  }

  /** Ingests one batch; returns how many blocks were stored (0 when the pool is full or nothing is ready). */
  async ingestOnce(): Promise<number> {
    const { db, source, linkId } = this.opts;
    if (!this.held) {
      const room = await this.room();
      if (room.total <= 0) return 0;
      const keys = await source.take(Math.min(room.total, this.opts.maxBlocksPerBatch));
      if (keys.length === 0) return 0;
      const already = await storedRefs(db, linkId, keys.map((k) => k.ref));
      if (already.size > 0) {
        // Offered again after a crash between storing and releasing it: stored once is enough.
        this.opts.log.warn({ link: linkId, refs: already.size }, 'device offered keys already stored; releasing them');
        await source.release([...already]);
      }
      const fresh = keys.filter((k) => !already.has(k.ref));
      for (const k of keys) if (already.has(k.ref)) k.material.fill(0);
      if (fresh.length === 0) return 0;
      this.next ??= BigInt(await nextSeq(db, linkId));
      this.held = { keys: fresh, firstSeq: String(this.next), attempted: false };
    }
    const held = this.held;
    const stored = await this.store(held);
    await source.release(held.keys.map((k) => k.ref));
    for (const k of held.keys) k.material.fill(0);
    this.held = undefined;
    this.next = BigInt(held.firstSeq) + BigInt(stored);
    if (this.failing) this.opts.log.info({ link: linkId }, 'key ingest resumed');
    this.failing = false;
    this.opts.onStored?.(stored);
    return stored;
  }

  private async room(): Promise<{ own: number; total: number }> {
    const counts = await poolCounts(this.opts.db, this.opts.linkId);
    const own = Math.max(0, this.opts.maxBlocks - counts.available - counts.ingested);
    const peer = this.opts.role === 'primary' ? (this.opts.peerRoom?.available(own) ?? 0) : 0;
    return { own, total: own + peer };
  }

  private async store(held: { keys: DeviceKey[]; firstSeq: string; attempted: boolean }): Promise<number> {
    const { db, barrier, linkId, role } = this.opts;
    const { keys, firstSeq } = held;
    const blocks = keys.reduce((n, k) => n + k.blocks, 0);
    // After a failed attempt, the attempt may have committed with its reply lost: then the batch is stored and
    // must not be sent again. Checked only after a failure, so the normal path costs nothing.
    if (held.attempted && BigInt(await nextSeq(db, linkId)) > BigInt(firstSeq)) return blocks;
    const room = await this.room();
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
    held.attempted = true;
    await insertIngested(db, linkId, role === 'loopback' ? 'AVAILABLE' : 'INGESTED', refs, rows, [audit]);
    if (role === 'primary') this.opts.peerRoom?.assign(blocks - owned);
    return blocks;
  }

  /** One pass; returns how long to wait before the next. */
  private async tick(): Promise<number> {
    let delay = this.opts.idleMs ?? 100;
    try {
      // A full batch means more is probably waiting: go again at once.
      if ((await this.ingestOnce()) >= this.opts.maxBlocksPerBatch) delay = 0;
    } catch (err) {
      if (!this.failing) {
        const what = err instanceof DeviceUnavailableError ? 'QKD device unavailable' : 'key ingest failing';
        this.opts.log.warn({ err: { message: (err as Error).message }, link: this.opts.linkId }, `${what}; retrying`);
      }
      this.failing = true;
      this.next = undefined; // re-read the stream position: the failed statement may or may not have committed
      delay = 1000;
    }
    return delay;
  }
}

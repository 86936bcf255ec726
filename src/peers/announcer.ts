import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { PeerClient } from './peer-client.js';
import type { MaterialAck } from '../schemas/peer.js';
import type { Db } from '../store/db.js';
import { confirmAnnounced, destroyUnconfirmed, unannouncedRefs, type StoredRef } from '../store/pool.js';
import { Repeater } from '../lifecycle/repeater.js';
import type { PeerRoom } from '../pool/ownership.js';

/**
 * The primary's side of a paired link: tells the peer which device keys fill which positions (and who owns them),
 * in stream order, and turns the blocks the peer confirmed into AVAILABLE material. Until then they are INGESTED
 * and never handed out, so every key the KME delivers is material both ends hold.
 *
 * Device keys the peer's device does not have are announced again until `giveUpMs` after their first refusal; then
 * the primary destroys its copy unused (audited `ingest_lost`). The announcement state lives in the database
 * (`link_ref.announced`), so a restarted primary carries on where it stopped.
 */
export class Announcer {
  private readonly loop = new Repeater(() => this.tick());
  private failing = false;
  private readonly notReadySince = new Map<string, number>();

  constructor(
    private readonly opts: {
      db: Db;
      client: PeerClient;
      kmeId: string;
      linkId: string;
      peerRoom: PeerRoom;
      log: Logger;
      giveUpMs?: number;
      /** Device keys per announcement, at most. */
      batchRefs?: number;
      /**
       * Blocks per announcement, at most (at least one device key is always sent): the secondary reads and seals
       * all of it before it answers, so an announcement must stay well within `timeoutMs`.
       */
      batchBlocks?: number;
      /** How long the secondary may take to answer one announcement. */
      timeoutMs?: number;
      idleMs?: number;
    },
  ) {}

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** New material was stored: announce it now rather than at the next poll. */
  kick(): void {
    this.loop.kick();
  }

  /** Announces one batch of pending device keys; returns how many the peer confirmed. */
  async announceOnce(): Promise<number> {
    const { db, client, linkId } = this.opts;
    const pending = await unannouncedRefs(db, linkId, this.opts.batchRefs ?? 256);
    if (pending.length === 0) return 0;
    const refs = upToBlocks(pending, this.opts.batchBlocks ?? 2_048);
    const ack = await client.post<MaterialAck>(
      `/peer/v1/links/${encodeURIComponent(linkId)}/material`,
      { keys: refs.map((r) => ({ ref: r.ref, first_seq: r.firstSeq, blocks: r.blocks, owner_split: r.ownerSplit })) },
      this.opts.timeoutMs ?? 15_000,
    );
    const stored = new Set(ack.stored);
    const confirmed = refs.filter((r) => stored.has(r.ref));
    if (confirmed.length > 0) {
      await confirmAnnounced(db, linkId, confirmed, [this.audit('ingest_confirm', confirmed)]);
      for (const r of confirmed) this.notReadySince.delete(r.ref);
    }
    this.opts.peerRoom.settled(peerShare(confirmed));
    this.opts.peerRoom.report(ack.room);
    const now = Date.now();
    const lost: StoredRef[] = [];
    for (const ref of ack.not_ready) {
      const since = this.notReadySince.get(ref) ?? now;
      this.notReadySince.set(ref, since);
      const r = refs.find((x) => x.ref === ref);
      if (r && now - since >= (this.opts.giveUpMs ?? 60_000)) lost.push(r);
    }
    if (lost.length > 0) {
      this.opts.log.warn({ link: linkId, device_keys: lost.length }, "the peer's device never had this material: destroyed unused");
      await destroyUnconfirmed(db, linkId, lost, [this.audit('ingest_lost', lost)]);
      this.opts.peerRoom.settled(peerShare(lost));
      for (const r of lost) this.notReadySince.delete(r.ref);
    }
    return confirmed.length;
  }

  private audit(operation: 'ingest_confirm' | 'ingest_lost', refs: StoredRef[]): string {
    const blocks = refs.reduce((n, r) => n + r.blocks, 0);
    return auditBody({
      operation,
      outcome: operation === 'ingest_confirm' ? 'ok' : 'failed',
      actor: `kme:${this.opts.client.kmeId}`,
      detail: {
        link_id: this.opts.linkId,
        blocks,
        device_keys: refs.length,
        ranges: refs.map((r) => ({ first: r.firstSeq, count: r.blocks })).slice(0, 64),
      },
    });
  }

  /** One pass; returns how long to wait before the next. */
  private async tick(): Promise<number> {
    let delay = this.opts.idleMs ?? 250;
    try {
      if ((await this.announceOnce()) > 0) delay = 0;
      if (this.failing) this.opts.log.info({ link: this.opts.linkId, peer: this.opts.client.kmeId }, 'announcing material to the peer again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) {
        this.opts.log.warn(
          { err: { message: (err as Error).message }, link: this.opts.linkId, peer: this.opts.client.kmeId },
          'cannot announce new material to the peer; it stays unusable until the peer confirms it',
        );
      }
      this.failing = true;
      delay = 1000;
    }
    return delay;
  }
}

/** The first refs, in order, up to `max` blocks in all (always at least one). */
function upToBlocks(refs: StoredRef[], max: number): StoredRef[] {
  let blocks = 0;
  const out: StoredRef[] = [];
  for (const r of refs) {
    if (out.length > 0 && blocks + r.blocks > max) break;
    out.push(r);
    blocks += r.blocks;
  }
  return out;
}

/** Blocks of these device keys that belong to the secondary. */
const peerShare = (refs: StoredRef[]) => refs.reduce((n, r) => n + r.blocks - r.ownerSplit, 0);

import type { Config } from '../config/schema.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import { LeaderLock } from '../lifecycle/leader-lock.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { insertSeal, treeEdge } from '../store/seals.js';
import { checkpointText } from './checkpoint.js';
import { gapLeafHash } from './leaves.js';
import { settledSeq } from './settle.js';
import type { LogKeys } from './log-keys.js';
import { Frontier } from './merkle.js';
import { signNote } from './signed-note.js';

/** The log's name in its checkpoints, and the name its keys sign under. */
export const logOrigin = (config: Pick<Config, 'kme_id' | 'audit'>): string => config.audit.origin ?? `qkms/${config.kme_id}/custody`;

/** At most this many leaves per seal; a longer backlog is sealed in several passes back to back. */
export const MAX_LEAVES_PER_SEAL = 50_000;

export interface SealerOptions {
  db: Db;
  /** For the leader lock's own connection. */
  databaseUrl: string;
  /** The log's signers; their name is the log's origin line. */
  keys: LogKeys;
  everyMs: number;
  log: Logger;
}

/**
 * The custody log's sealer: folds the events, in the order of their sequence numbers, into the RFC 9162 tree and
 * records a signed checkpoint (C2SP) for each step (`audit_seal`). Only the leader among a KME's replicas seals
 * (LeaderLock). A pass seals every number that is final (src/audit/settle.ts): events, and gaps for numbers whose
 * transactions rolled back; it never seals a number that could still change, so no event is skipped or sealed in two
 * orders. An idle log keeps its last checkpoint.
 */
export class Sealer {
  private readonly lock: LeaderLock;
  private passing: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: SealerOptions) {
    this.lock = new LeaderLock(o.databaseUrl, 'custody-sealer', o.log);
  }

  /**
   * One pass; returns the number of leaves it sealed (0 when not the leader, or nothing new is final). Passes of one
   * sealer run one after the other (the background job's and a caller's, e.g. a test's).
   */
  sealOnce(): Promise<number> {
    const pass = this.passing.then(() => this.pass());
    this.passing = pass.catch(() => undefined);
    return pass;
  }

  private async pass(): Promise<number> {
    const { db } = this.o;
    const origin = this.o.keys.name;
    if (!(await this.lock.lead())) return 0;
    const signers = await this.o.keys.signers();
    const last = await treeEdge(db);
    const size = last?.treeSize ?? 0;
    const bound = await settledSeq(db, { waitMs: Math.min(2_000, this.o.everyMs * 2) });
    if (bound === undefined || bound <= size) return 0;
    const upTo = Math.min(bound, size + MAX_LEAVES_PER_SEAL);
    // Leaf hashes are computed where the events are (src/audit/leaves.ts: SHA-256 of 0x00 ‖ the UTF-8 body): 32
    // bytes per event come back instead of its body, and the request loop neither parses nor hashes them.
    const { rows } = await db.query<{ seqs: string[] | null; leaves: Buffer | null }>(
      `SELECT array_agg(seq ORDER BY seq) AS seqs,
              string_agg(sha256('\\x00'::bytea || convert_to(body, 'UTF8')), ''::bytea ORDER BY seq) AS leaves
         FROM audit_event WHERE seq > $1 AND seq <= $2`,
      [size, upTo],
    );
    const seqs = rows[0]?.seqs ?? [];
    const eventLeaves = rows[0]?.leaves ?? Buffer.alloc(0);
    const frontier = last ? Frontier.of(size, last.frontier) : Frontier.empty();
    const hashes: Buffer[] = [];
    const gaps: number[] = [];
    const add = (h: Buffer) => (hashes.push(h), frontier.append(h));
    let next = size + 1;
    seqs.forEach((s, i) => {
      for (const seq = Number(s); next < seq; next++) (gaps.push(next), add(gapLeafHash(next)));
      add(eventLeaves.subarray(i * 32, i * 32 + 32));
      next++;
    });
    for (; next <= upTo; next++) (gaps.push(next), add(gapLeafHash(next)));
    const checkpoint = await signNote(checkpointText({ origin, size: upTo, root: frontier.root() }), signers);
    await insertSeal(db, { treeSize: upTo, firstSeq: size + 1, leafHashes: Buffer.concat(hashes), gaps, frontier: frontier.toBytes(), checkpoint });
    return upTo - size;
  }

  /**
   * Seals every `everyMs` until stopped, counted from the start of each pass (a pass under load waits for the
   * transactions in flight and takes a good part of `everyMs`; counting from its end would let the lag grow to twice
   * that); a pass that hit MAX_LEAVES_PER_SEAL goes on at once. Returns the stop.
   */
  start(): () => Promise<void> {
    const { everyMs } = this.o;
    const stop = startBackgroundJob({
      what: 'sealing the custody log',
      log: this.o.log,
      everyMs,
      step: async () => {
        const started = Date.now();
        const sealed = await this.sealOnce();
        return sealed >= MAX_LEAVES_PER_SEAL ? 0 : Math.max(0, everyMs - (Date.now() - started));
      },
    });
    return async () => {
      await stop();
      await this.close();
    };
  }

  /** Gives up leadership (another replica's sealer takes over). */
  async close(): Promise<void> {
    await this.lock.close();
  }
}

import type { Config } from '../config/schema.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import { LeaderLock } from '../lifecycle/leader-lock.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { insertSeal, treeEdge } from '../store/seals.js';
import { checkpointText } from './checkpoint.js';
import { eventLeafHash, gapLeafHash } from './leaves.js';
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
    const { rows } = await db.query<{ seq: string; body: string }>(
      `SELECT seq, body FROM audit_event WHERE seq > $1 AND seq <= $2 ORDER BY seq`,
      [size, upTo],
    );
    const frontier = last ? Frontier.of(size, last.frontier) : Frontier.empty();
    const hashes: Buffer[] = [];
    const gaps: number[] = [];
    const add = (h: Buffer) => (hashes.push(h), frontier.append(h));
    let next = size + 1;
    for (const r of rows) {
      for (const seq = Number(r.seq); next < seq; next++) (gaps.push(next), add(gapLeafHash(next)));
      add(eventLeafHash(r.body));
      next++;
    }
    for (; next <= upTo; next++) (gaps.push(next), add(gapLeafHash(next)));
    const checkpoint = await signNote(checkpointText({ origin, size: upTo, root: frontier.root() }), signers);
    await insertSeal(db, { treeSize: upTo, firstSeq: size + 1, leafHashes: Buffer.concat(hashes), gaps, frontier: frontier.toBytes(), checkpoint });
    return upTo - size;
  }

  /** Seals every `everyMs` until stopped; a pass that hit MAX_LEAVES_PER_SEAL goes on at once. Returns the stop. */
  start(): () => Promise<void> {
    const stop = startBackgroundJob({
      what: 'sealing the custody log',
      log: this.o.log,
      everyMs: this.o.everyMs,
      step: async () => ((await this.sealOnce()) >= MAX_LEAVES_PER_SEAL ? 0 : this.o.everyMs),
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

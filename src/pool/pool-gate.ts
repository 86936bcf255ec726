import { unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import type { Db } from '../store/db.js';
import { loadPoolStates, type PoolState, type PoolStateRow } from '../store/pool-states.js';

/** Keys and one-time pads are made from an active or a draining pool. */
export const poolHandsOut = (s: PoolState) => s === 'active' || s === 'draining';
/** An active or a suspended pool reads its device; a draining one, or one marked for deletion, runs dry. */
export const poolIngests = (s: PoolState) => s === 'active' || s === 'suspended';

const LABEL: Record<PoolState, string> = {
  active: 'active',
  suspended: 'suspended',
  draining: 'draining',
  pending_deletion: 'scheduled for deletion',
  deleted: 'deleted',
};

/**
 * The operators' word on each pool (src/store/pool-states.ts), held in memory for the hot paths: whether keys may be
 * made from a link's material here, and whether its device is read. Changes made by this process apply at once
 * (`set`); those made by another (a replica, `kms` against another process) within a poll (500 ms by default).
 */
export class PoolGate {
  private readonly states = new Map<string, PoolStateRow>();

  constructor(private readonly db: Db) {}

  async reload(): Promise<void> {
    const rows = await loadPoolStates(this.db);
    this.states.clear();
    for (const r of rows) this.states.set(r.linkId, r);
  }

  /** Polls the database until the returned stop is called; a failed poll keeps the last known states. */
  start(pollMs: number, log: Logger): () => Promise<void> {
    return startBackgroundJob({ what: 'watching the pool states', log, everyMs: pollMs, step: () => this.reload() });
  }

  set(row: PoolStateRow): void {
    this.states.set(row.linkId, row);
  }

  state(linkId: string): PoolState {
    return this.states.get(linkId)?.state ?? 'active';
  }

  /** Whether keys and one-time pads may be taken from the link's pool here. */
  handsOut(linkId: string): boolean {
    return poolHandsOut(this.state(linkId));
  }

  /** Whether the link's device is read into the pool. */
  ingests(linkId: string): boolean {
    return poolIngests(this.state(linkId));
  }

  /** Throws the 503 a key request gets when one of the pools it would take material from is held by an operator. */
  checkHandOut(linkIds: string[]): void {
    for (const id of linkIds) {
      if (!this.handsOut(id)) throw unavailable(`the key pool of link ${id} is ${LABEL[this.state(id)]} by an operator of this KME: no keys are made from it`);
    }
  }
}

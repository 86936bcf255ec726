import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import type { AuditEvent } from './event.js';
import { writeAuditEvents } from './writer.js';

/** Reasons kept apart in one summary; more distinct ones are counted under "other reasons". */
const MAX_REASONS = 20;
/** Identified refusals waiting for their write; past this, they are counted, and the count is written instead. */
const MAX_PENDING = 10_000;

export interface RefusalLogOptions {
  /** How often pending events are written (one INSERT for all of them); default 100 ms. */
  flushMs?: number;
  /** One summary of unidentified callers' refusals per window at most; default 10 s. */
  anonymousWindowMs?: number;
  /** Refusals described in full in each summary; default 5. */
  samples?: number;
}

/**
 * The custody log's record of requests that were refused (4xx) or failed (503), which change nothing and so have no
 * transaction of their own to join. They are written off the request path, many to one INSERT, every `flushMs`:
 * a burst of refusals costs the database one statement per flush, not one per request.
 *
 * Callers no certificate identified (none presented, one that does not verify, or one naming no SAE, KME or auditor
 * here) are counted, not written one row each: anyone who reaches the port could otherwise grow the undeletable log
 * at will and compete with deliveries for database connections. Per window, one `request` event says how many there
 * were, by reason, with the first few in full (path, status, reason, certificate fingerprint).
 *
 * What is pending when the process dies is lost (at most `flushMs` of refusals, and the current window's count):
 * refusals record that nothing happened, so no key's custody depends on them.
 */
export class RefusalLog {
  private pending: AuditEvent[] = [];
  private dropped = 0;
  private anonymous: { count: number; since: Date; byReason: Map<string, number>; samples: Array<Record<string, unknown>> } | undefined = undefined;
  private readonly timer: NodeJS.Timeout;
  private lastSummary = Date.now();
  private writing: Promise<void> = Promise.resolve();
  private readonly flushMs: number;
  private readonly windowMs: number;
  private readonly maxSamples: number;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    /** This KME, the actor of the "too many were waiting" count. */
    private readonly kmeId: string,
    opts: RefusalLogOptions = {},
  ) {
    this.flushMs = opts.flushMs ?? 100;
    this.windowMs = opts.anonymousWindowMs ?? 10_000;
    this.maxSamples = opts.samples ?? 5;
    this.timer = setInterval(() => void this.flush(false), this.flushMs);
    this.timer.unref();
  }

  /** A refusal or failure by a caller its certificate identified (actor sae:…, kme:…, auditor:…). */
  record(e: AuditEvent): void {
    if (e.actor === 'anonymous') return this.count(e);
    if (this.pending.length >= MAX_PENDING) this.dropped++;
    else this.pending.push({ ...e, at: e.at ?? new Date() });
  }

  private count(e: AuditEvent): void {
    const a = (this.anonymous ??= { count: 0, since: new Date(), byReason: new Map<string, number>(), samples: [] as Array<Record<string, unknown>> });
    a.count++;
    const reason = String(e.detail?.reason ?? 'refused');
    const key = a.byReason.has(reason) || a.byReason.size < MAX_REASONS ? reason : 'other reasons';
    a.byReason.set(key, (a.byReason.get(key) ?? 0) + 1);
    if (a.samples.length < this.maxSamples) {
      a.samples.push({ at: new Date().toISOString(), operation: e.operation, ...e.detail, ...(e.actorCert ? { cert_sha256: e.actorCert } : {}) });
    }
  }

  /** Writes what is pending; `all` also writes the unidentified callers' summary before its window ends. */
  flush(all = true): Promise<void> {
    const events = this.pending.splice(0);
    const now = Date.now();
    if (this.anonymous && (all || now - this.lastSummary >= this.windowMs)) {
      const a = this.anonymous;
      this.anonymous = undefined;
      this.lastSummary = now;
      events.push({
        operation: 'request',
        outcome: 'refused',
        actor: 'anonymous',
        detail: {
          summary: 'requests refused to callers no certificate identified',
          count: a.count,
          since: a.since.toISOString(),
          by_reason: Object.fromEntries(a.byReason),
          samples: a.samples,
        },
      });
    }
    if (this.dropped > 0) {
      events.push({ operation: 'request', outcome: 'refused', actor: `kme:${this.kmeId}`, detail: { summary: 'refusal events not written one by one: too many were waiting', count: this.dropped } });
      this.dropped = 0;
    }
    if (events.length === 0) return this.writing;
    // One write at a time, in order; a failed write is logged (the requests were answered already).
    this.writing = this.writing.then(() =>
      writeAuditEvents(this.db, events).catch((err: Error) =>
        this.log.warn({ err: { message: err.message }, events: events.length }, 'could not audit refused requests'),
      ),
    );
    return this.writing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush(true);
  }
}

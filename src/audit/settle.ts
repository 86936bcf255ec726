import type { Db } from '../store/db.js';

/**
 * The order of the custody log, and when a stretch of it is final.
 *
 * The log's order is the order of `audit_event.seq`. Numbers are drawn inside the inserting transactions, which
 * commit in any order and sometimes roll back, so at any moment the committed numbers may have holes that a later
 * commit fills. A sealer that folded numbers as it saw them would skip a late commit or seal it out of order. So it
 * seals only up to a bound below which nothing can change any more:
 *
 * 1. read L, the last number drawn so far (the sequence's last_value; CACHE 1, so no session holds numbers it has not
 *    drawn);
 * 2. then read the IDs of the transactions running in this database;
 * 3. wait until none of them is running any more.
 *
 * Every number ≤ L was drawn before step 1 by a transaction that had its ID before it drew (migration 0006's
 * trigger). So at step 2 that transaction had either ended or was running with its ID, and is in the list; once the
 * list has ended, every number ≤ L is final: committed (visible to any new snapshot, since a transaction leaves the
 * running set only as its commit becomes visible) or never to be (rolled back: a gap, for good). Transactions of
 * other databases cannot draw our numbers, so they are not waited for.
 */
export async function settledSeq(db: Db, opts: { waitMs: number; pollMs?: number }): Promise<number | undefined> {
  // Polls every pollMs at first, then less often (up to 4×): most transactions in flight end within a few
  // milliseconds, but under load some take a hundred, and each poll is a query on the KME's own pool.
  let pollMs = opts.pollMs ?? 5;
  const maxPollMs = pollMs * 4;
  const drawn = await db.query<{ last: string }>(
    `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS last FROM audit_event_seq`,
  );
  const last = Number(drawn.rows[0]!.last);
  // A statement of its own (its own transaction): pg_stat_activity is read once per transaction.
  const running = await db.query<{ xids: string[] | null }>(
    `SELECT array_agg(backend_xid::text) AS xids FROM pg_stat_activity
      WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()`,
  );
  const xids = running.rows[0]!.xids ?? [];
  const deadline = Date.now() + opts.waitMs;
  while (xids.length > 0) {
    const still = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_xid = ANY($1::xid[])`, [xids]);
    if (still.rows[0]!.n === 0) break;
    if (Date.now() >= deadline) return undefined;
    await new Promise((r) => setTimeout(r, pollMs));
    pollMs = Math.min(maxPollMs, pollMs * 2);
  }
  return last;
}

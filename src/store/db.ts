import pg from 'pg';
import type { Logger } from '../log.js';

/**
 * The Postgres connection pool. Every query the KME runs goes through `pg`, whether the server is the operator's
 * PostgreSQL or the demo's embedded one (src/store/embedded-postgres.ts).
 *
 * Timeouts are short on purpose: when the database is unreachable a request must fail fast with a 503 rather
 * than hang, and the pool must keep trying to reconnect by itself (it does: a dead client is discarded and the
 * next `connect` dials afresh).
 */
export type Db = pg.Pool;
export type DbClient = pg.PoolClient;
/** Either: the pool runs a statement on its own (autocommit), a client inside the caller's transaction. */
export type Queryable = Pick<DbClient, 'query'>;

export function createDb(opts: { url: string; poolSize: number; log: Logger }): Db {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize,
    connectionTimeoutMillis: 3_000,
    idleTimeoutMillis: 30_000,
    query_timeout: 10_000,
    application_name: 'qkd-kms',
    // No JIT compilation in the KME's sessions: its statements are short, and PostgreSQL compiles a statement whose
    // estimated cost passes jit_above_cost on every execution. Measured at a relay node of the bench: a binding
    // statement whose generic plan was estimated above it spent about 100 ms compiling, for a few milliseconds of work.
    // Generic plans for the named (prepared) statements of the delivery path (`named` below): each is planned once per
    // connection and written so that its generic plan is a good one (docs/storage.md). Left to choose, PostgreSQL
    // planned the binding statement afresh for every batch of one or two requests (0.5 ms of planning for 0.3 ms of
    // work; with this, the median request at a paced 500 req/s took 3.5–3.7 ms instead of 4.5–5.0), and which plan a
    // statement ran depended on the batch sizes it had seen. Unnamed statements are planned with their values every
    // time, as before.
    // Sent with the connection's start-up; an `options` parameter in the URL replaces it (the operator's choice).
    options: '-c jit=off -c plan_cache_mode=force_generic_plan',
  });
  // An idle client whose server went away emits 'error' on the pool; unhandled, it would kill the process.
  pool.on('error', (err) => opts.log.warn({ err: { message: err.message } }, 'database connection lost (idle client)'));
  return pool;
}

/**
 * Runs `fn` inside one transaction on one connection. Commits when `fn` resolves, rolls back when it throws.
 * A connection that failed mid-transaction is destroyed rather than returned to the pool, and is not asked to
 * roll back: a dead or silent connection would only make the caller wait a second timeout (the server rolls back
 * an interrupted transaction by itself).
 *
 * A COMMIT that fails may or may not have committed: callers treat that as "the change may have happened" (for
 * key delivery: the keys are out of the pool and burned, never handed out again).
 */
export async function withTransaction<T>(db: Db, fn: (client: DbClient) => Promise<T>): Promise<T> {
  const client = await db.connect();
  // While checked out, a client's 'error' event has no pool listener; unhandled, it would end the process.
  let lost: Error | undefined;
  const onError = (err: Error) => (lost = err);
  client.on('error', onError);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    broken = lost ?? (isConnectionError(err) ? (err as Error) : undefined);
    if (!broken) {
      await client.query('ROLLBACK').catch((rollbackErr: Error) => (broken = rollbackErr));
    }
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken ?? lost);
  }
}

/** True for failures of the connection itself (refused, reset, timed out, terminated), not of a statement. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (!e) return false;
  if (e.code && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EHOSTUNREACH|57P0[123]|08\d\d\d)$/.test(e.code)) return true;
  return /Connection terminated|timeout exceeded when trying to connect|Query read timeout|not queryable|connection (is )?closed|Client has encountered a connection error/i.test(
    e.message ?? '',
  );
}

/**
 * An SQL `bytea[]` built from one parameter per buffer, starting at `$first`. node-postgres sends a Buffer parameter
 * as raw bytes but an array of Buffers as hex text: twice the bytes on the wire, and parsed by the server. For sealed
 * chunks (megabytes a second at link speed) that difference is most of an ingest statement's cost.
 */
export function byteaArray(buffers: ReadonlyArray<Buffer>, first: number): { sql: string; params: Buffer[] } {
  if (buffers.length === 0) return { sql: 'ARRAY[]::bytea[]', params: [] };
  return { sql: `ARRAY[${buffers.map((_, i) => `$${first + i}::bytea`).join(',')}]`, params: [...buffers] };
}

/**
 * A named (prepared) statement: PostgreSQL parses and plans it once per connection instead of on every call. For the
 * statements of every delivery, whose CTEs cost more to plan than to run (measured: the statement that binds keys
 * took 1.4 ms of database CPU unprepared). Only for statements whose text never varies. Each runs its generic plan
 * (`plan_cache_mode` in createDb): write it so that plan is good whatever the values (docs/storage.md).
 */
export function named(name: string, text: string, values: unknown[]): pg.QueryConfig {
  return { name, text, values };
}

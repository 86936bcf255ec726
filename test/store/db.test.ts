import t from 'tap';
import { createLogger } from '../../src/log.js';
import { createDb, named, withTransaction, type Db } from '../../src/store/db.js';
import { freshDatabase, type TestDatabase } from '../helpers/database.js';
import { sleep } from '../helpers/etsi.js';
import { hostPortOf, TcpProxy } from '../helpers/tcp-proxy.js';

// The contract of src/store/db.ts under a failing network (DESIGN: "when the database is unreachable a request
// must fail fast with a 503 rather than hang, and the pool must keep trying to reconnect by itself"):
// withTransaction rejects promptly when its connection goes away, nothing escapes as an uncaught error, and
// the pool serves again once the database is back. Through a TCP proxy the test controls.

const QUERY_TIMEOUT_MS = 10_000; // createDb's query_timeout

let tdb: TestDatabase;
let proxy: TcpProxy;
let db: Db;
t.before(async () => {
  tdb = await freshDatabase();
  proxy = await TcpProxy.start(hostPortOf(tdb.url));
  db = createDb({ url: proxy.urlFor(tdb.url), poolSize: 2, log: createLogger({ level: 'silent' }) });
  t.comment(`database: ${tdb.kind}`);
});
t.teardown(async () => {
  await db?.end().catch(() => undefined);
  await proxy?.close();
  await tdb?.drop();
});

t.test('a silent network mid-transaction: rejected within the query timeout, not twice it', async (t) => {
  await withTransaction(db, (c) => c.query('SELECT 1')); // a pooled connection exists
  const started = Date.now();
  const tx = withTransaction(db, async (c) => {
    await c.query('SELECT 1');
    proxy.blackhole();
    await c.query('SELECT 2');
  });
  await t.rejects(tx, { message: /Query read timeout/ }, 'the transaction fails with the read timeout');
  const took = Date.now() - started;
  t.comment(`withTransaction gave up after ${took} ms`);
  // Today the failed transaction then sends ROLLBACK on the same stuck connection and waits a second
  // query_timeout for it: ~20 s before the caller can answer its 503.
  t.ok(took <= QUERY_TIMEOUT_MS + 2_000, `gave up within query_timeout + 2 s (took ${took} ms)`);
  await proxy.restore();
  const { rows } = await withTransaction(db, (c) => c.query('SELECT 42 AS n'));
  t.same(rows, [{ n: 42 }], 'the pool serves again once the network is back');
});

t.test('the connection dies mid-transaction: rejected, and nothing escapes as an uncaught error', async (t) => {
  // If the pg client of a checked-out connection emits 'error' with no listener, Node throws it from the
  // socket's event handler and the whole KME process exits.
  const escaped: Error[] = [];
  const record = (err: Error) => escaped.push(err);
  process.on('uncaughtException', record);
  try {
    const tx = withTransaction(db, async (c) => {
      await c.query('SELECT 1');
      await proxy.refuse(); // destroys the connection while the transaction holds it, between two queries
      await sleep(100);
      await c.query('SELECT 2');
    });
    await t.rejects(tx, 'the transaction fails');
  } finally {
    process.off('uncaughtException', record);
  }
  t.same(escaped.map((e) => e.message), [], 'no uncaught exception (in the KME it would end the process)');
  await proxy.restore();
  const { rows } = await withTransaction(db, (c) => c.query('SELECT 42 AS n'));
  t.same(rows, [{ n: 42 }], 'the pool serves again once the database is reachable');
});

t.test('every session of the pool runs without JIT compilation (it cost a relay node about 100 ms a statement)', async (t) => {
  // Two connections at once, so that the second is a new session too.
  const settings = await Promise.all([0, 1].map(() => withTransaction(db, async (c) => (await c.query('SHOW jit')).rows[0].jit as string)));
  t.same(settings, ['off', 'off']);
  const { rows } = await db.query('SHOW jit');
  t.equal(rows[0].jit, 'off', 'a query on the pool too');
});

t.test('every session plans the named statements once, generically (not afresh for every small batch)', async (t) => {
  const modes = await Promise.all(
    [0, 1].map(() => withTransaction(db, async (c) => (await c.query('SHOW plan_cache_mode')).rows[0].plan_cache_mode as string)),
  );
  t.same(modes, ['force_generic_plan', 'force_generic_plan']);
  // A named statement run with different values is planned once per session (pg_prepared_statements counts plans).
  const client = await db.connect();
  try {
    for (const n of [1, 2, 3, 4, 5, 6, 7]) await client.query(named('plan-count-probe', 'SELECT count(*) FROM generate_series(1, $1::int)', [n]));
    const { rows } = await client.query(`SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'plan-count-probe'`);
    t.same(rows, [{ generic_plans: '7', custom_plans: '0' }], 'seven runs, one generic plan reused, no custom plan');
  } finally {
    client.release();
  }
});

import t from 'tap';
import pg from 'pg';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { Barrier } from '../../src/barrier/barrier.js';
import { createLogger } from '../../src/log.js';
import { Ingester } from '../../src/pool/ingester.js';
import { SimulatedDevice } from '../../src/sources/simulator.js';
import { createDb, type Db } from '../../src/store/db.js';
import { migrate } from '../../src/store/migrate.js';
import { ensureLink } from '../../src/store/pool.js';
import { freshDatabase, type TestDatabase } from '../helpers/database.js';
import { hostPortOf, TcpProxy } from '../helpers/tcp-proxy.js';

// The ingester when the database commits an INSERT but its reply is lost (the review found it wedged for good:
// it sent the same positions again, hit a duplicate key on every later pass, and the pool drained). Real
// PostgreSQL behind a TCP proxy that lets the ingest statement through and then cuts the connection before the
// answer comes back: the statement commits, the ingester only sees its connection die.

let tdb: TestDatabase;
let db: Db;
let proxy: TcpProxy;
t.before(async () => {
  tdb = await freshDatabase();
  const log = createLogger({ level: 'silent' });
  await migrate(tdb.url, log);
  proxy = await TcpProxy.start(hostPortOf(tdb.url));
  db = createDb({ url: proxy.urlFor(tdb.url), poolSize: 2, log });
  await ensureLink(db, { linkId: 'L', localKmeId: 'K', peerKmeId: 'K', primaryKmeId: 'K', blockBits: 256 });
});
t.teardown(async () => {
  await db?.end();
  await proxy?.close();
  await tdb?.drop();
});

t.test('an INSERT that committed with its reply lost: the batch counts as stored, ingest carries on', async (t) => {
  let now = 0;
  const source = new SimulatedDevice({ linkId: 'L', blockBits: 256, rateBitsPerSecond: 256 * 100, qber: 0, startSeq: '0', bufferBlocks: 10_000, now: () => now });
  const ingester = new Ingester({
    db,
    barrier: new Barrier(createMockKeyWrapper()),
    source,
    kmeId: 'K',
    linkId: 'L',
    blockBits: 256,
    role: 'loopback',
    maxBlocks: 100_000,
    maxBlocksPerBatch: 50,
    log: createLogger({ level: 'silent' }),
  });
  now += 1000; // 100 blocks ready
  const cut = proxy.cutAfter('INSERT INTO link_ref');
  await t.rejects(ingester.ingestOnce(), /Connection terminated|connection/i, 'the first batch commits, but the ingester hears its connection die');
  await cut;
  const check = new pg.Client({ connectionString: tdb.url });
  await check.connect();
  t.teardown(() => check.end());
  const committed = await check.query(`SELECT COALESCE(sum(blocks), 0)::int AS n FROM key_chunk WHERE link_id = 'L'`);
  t.equal(committed.rows[0].n, 50, 'the lost-reply case happened: the batch is in the database');
  t.equal(await ingester.ingestOnce(), 50, 'the retry finds the batch stored and does not send it again');
  t.equal(await ingester.ingestOnce(), 50, 'the next batch goes in after it');
  now += 1000;
  t.equal(await ingester.ingestOnce(), 50, 'and ingest keeps going');

  const { rows } = await check.query(`
    SELECT sum(blocks)::int AS n, min(first_seq)::int AS first, max(first_seq + blocks - 1)::int AS last,
           (SELECT count(*)::int FROM key_chunk a JOIN key_chunk b ON a.first_seq < b.first_seq AND a.first_seq + a.blocks > b.first_seq) AS overlaps,
           (SELECT COALESCE(sum(available), 0)::int FROM pool_count) AS counted,
           (SELECT count(*)::int FROM audit_event WHERE operation = 'ingest') AS audited
      FROM key_chunk WHERE link_id = 'L'`);
  t.same(rows[0], { n: 150, first: 0, last: 149, overlaps: 0, counted: 150, audited: 3 }, 'positions 0..149, each once, counted and audited once per batch');
});

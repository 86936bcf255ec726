import t from 'tap';
import pg from 'pg';
import type { EtsiClient, Response } from '../helpers/client.js';
import { etsiErrorProblem, NOT_FOUND, windows } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { countedAndAvailable, eraseNow, heldMaterial, poolViolations } from '../helpers/pool-state.js';
import { answered } from '../helpers/client.js';

// Issue 2 item 5: under 32 concurrent keep-alive clients no key_ID and no key material is delivered to two
// requests; concurrent dec_keys for one key_ID give it out exactly once per slave; the "every slave served →
// erase" decision holds when the slaves race. Real KME, real TLS sockets, real PostgreSQL (DATABASE_URL's or the
// embedded one).

const CLIENTS = 32;
const REQUESTS = 1_500;
const BLOCK_BYTES = 32; // key_size 256 bits = the block size material is stored in

let k: TestKms;
let check: pg.Client; // a connection of the test's own, straight to the database
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 4_000 } });
  check = new pg.Client({ connectionString: k.db.url });
  await check.connect();
  t.comment(`database: ${k.db.kind}`);
  t.comment(`hsm: ${k.wrapper.description}`);
});
t.teardown(async () => {
  await check?.end();
  await k?.close();
});

type Key = { key_ID: string; key: string };

/** Opens one keep-alive connection per client before the race, so the race is between requests, not handshakes. */
async function warm(clients: EtsiClient[], path: string): Promise<void> {
  const res = await Promise.all(clients.map((c) => c.get(path)));
  if (res.some((r) => r.status !== 200)) throw new Error(`warm-up failed: ${res.find((r) => r.status !== 200)?.text}`);
}

t.test(`${CLIENTS} clients, ${REQUESTS} enc_keys: no key_ID and no material twice`, async (t) => {
  const clients = Array.from({ length: CLIENTS }, () => k.client('SAE_A'));
  await warm(clients, '/api/v1/keys/SAE_B/status');
  const started = Date.now();
  let next = 0;
  let sent = 0;
  const ok: Array<{ req: { number: number; size: number }; keys: Key[] }> = [];
  const failed: Response[] = [];
  const transportErrors: string[] = [];

  await Promise.all(
    clients.map(async (c) => {
      for (let i = next++; i < REQUESTS; i = next++) {
        const req = { number: i % 2 === 0 ? 1 : 5, size: (i >> 1) % 2 === 0 ? 256 : 512 };
        sent++;
        try {
          const res =
            i % 3 === 0
              ? await c.get(`/api/v1/keys/SAE_B/enc_keys?number=${req.number}&size=${req.size}`)
              : await c.post('/api/v1/keys/SAE_B/enc_keys', req);
          if (res.status === 200) ok.push({ req, keys: res.body.keys });
          else failed.push(res);
        } catch (err) {
          transportErrors.push((err as Error).message);
        }
      }
    }),
  );
  t.comment(`${REQUESTS} requests in ${Date.now() - started} ms: ${ok.length} × 200, ${failed.length} other`);

  t.equal(sent, REQUESTS, 'every request was sent');
  t.same(transportErrors, [], 'no request died on the wire');
  t.equal(ok.length + failed.length, REQUESTS, '200s plus non-200s = requests sent');
  t.ok(ok.length >= REQUESTS / 2, `most requests were served (${ok.length})`);
  for (const res of failed) {
    const problem = etsiErrorProblem(res);
    if (problem) t.fail(`status ${res.status}: ${problem}`);
    // An empty pool is the only acceptable refusal here: an internal error, a timeout or a lost database is a bug.
    if (res.status !== 503 || !/^not enough key material/.test(res.body?.message ?? '')) {
      t.fail(`unexpected refusal ${res.status}: ${res.text}`);
    }
  }
  const statuses = new Map<string, number>();
  for (const r of failed) statuses.set(`${r.status} ${r.body?.message}`, (statuses.get(`${r.status} ${r.body?.message}`) ?? 0) + 1);
  for (const [s, n] of statuses) t.comment(`  ${n} × ${s}`);

  // Shape: each 200 carries exactly what was asked for.
  let shapeErrors = 0;
  for (const { req, keys } of ok) {
    if (keys.length !== req.number) shapeErrors++;
    for (const key of keys) if (Buffer.from(key.key, 'base64').length * 8 !== req.size) shapeErrors++;
  }
  t.equal(shapeErrors, 0, 'every 200 has `number` keys of `size` bits');

  // No key_ID twice, no whole key twice, no 32-byte run of material in two different keys (at any offset).
  const all = ok.flatMap((o) => o.keys);
  const ids = new Set(all.map((x) => x.key_ID));
  t.equal(ids.size, all.length, `no key_ID twice among ${all.length} keys`);
  t.equal(new Set(all.map((x) => x.key)).size, all.length, 'no key (base64) twice');
  const owner = new Map<string, string>();
  const shared: string[] = [];
  for (const key of all) {
    for (const w of windows(Buffer.from(key.key, 'base64'), BLOCK_BYTES)) {
      const seen = owner.get(w);
      if (seen !== undefined && seen !== key.key_ID) shared.push(`${seen} / ${key.key_ID}`);
      else owner.set(w, key.key_ID);
    }
  }
  t.same(shared.slice(0, 5), [], 'no 32-byte block of material appears in two keys');

  // The database agrees: exactly the key_IDs answered exist, each bound to its own positions.
  const { rows: keyRows } = await check.query<{ key_id: string; size_bits: number; block_count: number; blocks: number }>(
    `SELECT k.key_id::text, k.size_bits, k.block_count,
            (SELECT COALESCE(sum(upper(r) - lower(r)), 0) FROM unnest(k.seqs) AS r)::int AS blocks
       FROM qkd_key k`,
  );
  const stored = new Set(keyRows.map((r) => r.key_id));
  t.same([...ids].filter((id) => !stored.has(id)).slice(0, 3), [], 'every key_ID answered with 200 is in qkd_key');
  // Every refusal was "not enough key material", which takes nothing: the database holds exactly the keys answered.
  const extra = [...stored].filter((id) => !ids.has(id)).length;
  t.equal(extra, 0, 'qkd_key holds no key_ID beyond those answered');
  const sizeOf = new Map(ok.flatMap((o) => o.keys.map((x) => [x.key_ID, o.req.size] as const)));
  const badRows = keyRows.filter(
    (r) =>
      (sizeOf.has(r.key_id) && r.size_bits !== sizeOf.get(r.key_id)) ||
      r.block_count !== r.size_bits / 256 ||
      r.blocks !== r.block_count,
  );
  t.same(badRows.slice(0, 3), [], 'each key owns exactly its block_count positions');
});

t.test('16 concurrent dec_keys for the same key_ID: exactly one 200', async (t) => {
  const master = k.client('SAE_A');
  const slaves = Array.from({ length: 16 }, () => k.client('SAE_B'));
  await warm(slaves, '/api/v1/keys/SAE_A/status');
  for (let round = 0; round < 6; round++) {
    const enc = await master.post('/api/v1/keys/SAE_B/enc_keys', { size: round % 2 ? 512 : 256 });
    t.equal(enc.status, 200, answered(enc));
    const key: Key = enc.body.keys[0];
    const path = `/api/v1/keys/SAE_A/dec_keys`;
    const results = await Promise.all(
      slaves.map((c, i) =>
        i % 2 ? c.get(`${path}?key_ID=${key.key_ID}`) : c.post(path, { key_IDs: [{ key_ID: key.key_ID }] }),
      ),
    );
    const wins = results.filter((r) => r.status === 200);
    const losses = results.filter((r) => r.status !== 200);
    t.equal(wins.length, 1, `round ${round}: exactly one 200`);
    t.same(wins[0]?.body, { keys: [key], key_container_extension: { qkms_key_origin: 'qkd' } }, `round ${round}: the winner got the master's key`);
    t.same(
      [...new Set(losses.map((r) => `${r.status} ${r.body?.message}`))],
      [`400 ${NOT_FOUND}`],
      `round ${round}: every other request is 400 not found`,
    );
    for (const r of losses) {
      const problem = etsiErrorProblem(r);
      if (problem) t.fail(problem);
      if (r.text.includes(key.key)) t.fail('key material in a refusal');
    }
  }
});

t.test('multicast: B, C and D race for the same keys; each gets them once; erased after the last', async (t) => {
  const master = k.client('SAE_A');
  // four connections per slave, so a slave races itself as well as the others
  const slaves = ['SAE_B', 'SAE_C', 'SAE_D'].flatMap((sae) => Array.from({ length: 4 }, () => ({ sae, c: k.client(sae) })));
  await warm(slaves.map((s) => s.c), '/api/v1/keys/SAE_A/status');
  const allIds: string[] = [];
  for (let round = 0; round < 8; round++) {
    const enc = await master.post('/api/v1/keys/SAE_B/enc_keys', {
      number: 2,
      size: round % 2 ? 512 : 256,
      additional_slave_SAE_IDs: ['SAE_C', 'SAE_D'],
    });
    t.equal(enc.status, 200, answered(enc));
    const keys: Key[] = enc.body.keys;
    const ids = keys.map((x) => x.key_ID);
    allIds.push(...ids);
    const results = await Promise.all(
      slaves.map(async ({ sae, c }) => ({
        sae,
        res: await c.post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids.map((key_ID) => ({ key_ID })) }),
      })),
    );
    for (const sae of ['SAE_B', 'SAE_C', 'SAE_D']) {
      const mine = results.filter((r) => r.sae === sae);
      const wins = mine.filter((r) => r.res.status === 200);
      t.equal(wins.length, 1, `round ${round}: ${sae} gets the keys exactly once`);
      t.same(wins[0]?.res.body, { keys, key_container_extension: { qkms_key_origin: 'qkd' } }, `round ${round}: ${sae} got the master's material`);
      for (const r of mine.filter((m) => m.res.status !== 200)) {
        t.equal(r.res.status, 400, `round ${round}: ${sae} loser is a 400`);
        t.equal(r.res.body?.message, NOT_FOUND);
      }
    }
    const { rows } = await check.query(
      'SELECT k.state AS key_state, k.slaves_pending, k.wrapped IS NULL AS no_envelope FROM qkd_key k WHERE key_id = ANY($1::uuid[])',
      [ids],
    );
    t.equal(rows.length, ids.length, `round ${round}: the keys are still there as metadata`);
    t.same(
      [...new Set(rows.map((r) => JSON.stringify(r)))],
      [JSON.stringify({ key_state: 'DESTROYED', slaves_pending: 0, no_envelope: true })],
      `round ${round}: every key DESTROYED once all three slaves are served`,
    );
    await eraseNow(k.kms.db, k.kms.wrapper);
    t.equal(await heldMaterial(check, ids), 0, `round ${round}: and its material erased from the stored chunks`);
  }
  const { rows: slaveRows } = await check.query(
    'SELECT sum(cardinality(slaves))::int AS n, sum(cardinality(fetched_by))::int AS delivered FROM qkd_key WHERE key_id = ANY($1::uuid[])',
    [allIds],
  );
  t.same(slaveRows[0], { n: allIds.length * 3, delivered: allIds.length * 3 }, 'every slave of every key recorded as having fetched it once');
  const { rows: destroyed } = await check.query(
    `SELECT id, count(*)::int AS n FROM audit_event, unnest(key_ids) AS id
      WHERE operation = 'destroy' AND id = ANY($1::uuid[]) GROUP BY id`,
    [allIds],
  );
  t.equal(destroyed.length, allIds.length, 'a destroy event for every key');
  t.ok(destroyed.every((r) => r.n === 1), 'and only one per key');
});

t.test('database invariants after the races', async (t) => {
  const { counted, available } = await countedAndAvailable(check);
  t.equal(counted, available, `sum(pool_count.available) = free positions of the pool (${available})`);
  const v = await poolViolations(check);
  t.equal(v.freeButBound, 0, 'no free position is bound to a key_ID');
  t.equal(v.multiBound, 0, 'every position is bound to at most one key_id');
  t.equal(v.wrongCount, 0, 'no key holds more or fewer positions than its block count');
  t.equal(v.takenUnbound, 0, 'every taken position belongs to a key or was destroyed');
});

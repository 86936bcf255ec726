import t from 'tap';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { EtsiClient } from '../helpers/client.js';
import { databaseHaystack, findLeaks } from '../helpers/leak-scan.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { eraseNow, heldMaterial } from '../helpers/pool-state.js';
import { Barrier } from '../../src/barrier/barrier.js';
import { intervalsOf } from '../../src/store/positions.js';

// Issue 2 items 4 and 11 (DESIGN §3.1): storage only ever sees ciphertext, IDs and metadata. After delivering a
// few hundred keys in every life stage (fetched by every slave and erased, fetched by some slaves, not fetched),
// no delivered key appears anywhere in the database or in the logs, in any encoding.

let k: TestKms;
const clients = new Map<string, EtsiClient>();
const client = (sae: string) => clients.get(sae) ?? clients.set(sae, k.client(sae)).get(sae)!;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 1_000 } });
  t.comment(`database: ${k.db.kind}`);
  t.comment(`hsm: ${k.wrapper.description}`);
});
t.teardown(() => k?.close());

type Key = { key_ID: string; key: string };
const SIZES = [64, 128, 200, 256, 264, 512, 1024];

const delivered: Key[] = [];

async function enc(count: number, additional: string[] = []): Promise<Key[]> {
  const out: Key[] = [];
  let retries = 0;
  for (let i = 0; out.length < count; i++) {
    const size = SIZES[(delivered.length + out.length + i) % SIZES.length]!;
    const res = await client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', {
      number: Math.min(10, count - out.length),
      size,
      ...(additional.length ? { additional_slave_SAE_IDs: additional } : {}),
    });
    if (res.status === 503 && retries++ < 5) continue; // a busy pool: ask again
    if (res.status !== 200) throw new Error(`enc_keys: ${res.status} ${res.text}`);
    out.push(...res.body.keys);
  }
  delivered.push(...out);
  return out;
}

async function dec(sae: string, keys: Key[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 10) {
    const batch = keys.slice(i, i + 10);
    const res = await client(sae).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: batch.map((x) => ({ key_ID: x.key_ID })) });
    if (res.status !== 200) throw new Error(`dec_keys by ${sae}: ${res.status} ${res.text}`);
    if (JSON.stringify(res.body.keys) !== JSON.stringify(batch)) throw new Error(`dec_keys by ${sae}: other material`);
  }
}

t.test('deliver keys in every stage of their life', async (t) => {
  const fetched = await enc(100); // fetched by the only slave: erased
  await dec('SAE_B', fetched);
  await enc(100); // never fetched: still wrapped in the pool
  const multicastAll = await enc(60, ['SAE_C', 'SAE_D']); // every slave fetched: erased
  for (const sae of ['SAE_B', 'SAE_C', 'SAE_D']) await dec(sae, multicastAll);
  const multicastSome = await enc(40, ['SAE_C', 'SAE_D']); // D never fetched: still wrapped
  await dec('SAE_B', multicastSome);
  await dec('SAE_C', multicastSome);
  t.equal(delivered.length, 300);
  t.equal(new Set(delivered.map((x) => x.key_ID)).size, 300);
  const { rows } = await k.kms.db.query(
    `SELECT state, count(*)::int AS n FROM qkd_key WHERE key_id = ANY($1::uuid[]) GROUP BY state ORDER BY state`,
    [delivered.map((x) => x.key_ID)],
  );
  t.same(rows, [{ state: 'DELIVERED', n: 140 }, { state: 'DESTROYED', n: 160 }], 'some keys erased, some still held');
});

t.test('the scanner finds planted material in every form (it can fail)', async (t) => {
  const canaries = [randomBytes(32), randomBytes(128), randomBytes(8), randomBytes(64), randomBytes(48)];
  const c = new pg.Client({ connectionString: k.db.url });
  await c.connect();
  try {
    await c.query('CREATE TABLE scan_canary (id int, blob bytea, note text, doc jsonb)');
    await c.query('INSERT INTO scan_canary VALUES ($1, $2, NULL, NULL)', [1, Buffer.concat([randomBytes(7), canaries[0]!.subarray(3, 19), randomBytes(5)])]);
    await c.query('INSERT INTO scan_canary VALUES ($1, NULL, $2, NULL)', [2, `prefix ${canaries[1]!.subarray(5, 40).toString('base64')} suffix`]);
    await c.query('INSERT INTO scan_canary VALUES ($1, $2, NULL, NULL)', [3, Buffer.concat([randomBytes(3), canaries[2]!])]);
    await c.query('INSERT INTO scan_canary VALUES ($1, NULL, NULL, $2)', [4, { k: `x${canaries[3]!.toString('hex').toUpperCase().slice(1, 60)}` }]);
    await c.query('INSERT INTO scan_canary VALUES ($1, NULL, $2, NULL)', [5, `a${canaries[4]!.subarray(1).toString('base64url')}`]);
    const { hay } = await databaseHaystack(k.db.url);
    const found = new Set(findLeaks(canaries, hay).map((l) => l.key));
    t.same([...found].sort(), [0, 1, 2, 3, 4], 'raw window, base64 fragment, short raw key, odd-nibble HEX, base64url: all found');
  } finally {
    await c.query('DROP TABLE IF EXISTS scan_canary');
    await c.end();
  }
});

t.test('no delivered key in any column of any table, as text or as bytea', async (t) => {
  const keys = delivered.map((x) => Buffer.from(x.key, 'base64'));
  const { hay, tables, columns, rows } = await databaseHaystack(k.db.url);
  t.comment(`scanned ${tables.length} tables, ${columns} columns, ${rows} values`);
  for (const table of ['audit_event', 'erase_queue', 'key_chunk', 'link', 'link_ref', 'pgmigrations', 'pool_count', 'qkd_key']) {
    t.ok(tables.includes(table), `${table} was scanned`);
  }
  t.notOk(tables.includes('scan_canary'), 'the canary table is gone');
  const leaks = findLeaks(keys, hay);
  t.same(
    leaks.slice(0, 5).map((l) => `${delivered[l.key]!.key_ID} in ${l.where}: ${l.how}`),
    [],
    'no delivered key material in the database',
  );
});

t.test('no delivered key in the logs', async (t) => {
  const logs = k.logs();
  t.ok(logs.length > 0, 'the KME logged something');
  const keys = delivered.map((x) => Buffer.from(x.key, 'base64'));
  const leaks = findLeaks(keys, { texts: [{ where: 'logs', text: logs }], bytes: [] });
  t.same(leaks.slice(0, 5).map((l) => `${delivered[l.key]!.key_ID}: ${l.how}`), [], 'no delivered key material in the logs');
});

t.test('stored chunks are barrier envelopes; destroyed positions are erased from them', async (t) => {
  const blockBytes = k.config.keys.key_size / 8;
  await eraseNow(k.kms.db, k.kms.wrapper);
  const { rows } = await k.kms.db.query<{ link: string; first: string; blocks: number; sealed: Buffer; kek_version: number; gone: string }>(
    'SELECT link_id AS link, first_seq::text AS first, blocks, sealed, kek_version, gone::text AS gone FROM key_chunk',
  );
  t.ok(rows.reduce((n, r) => n + r.blocks, 0) >= 1_000, `${rows.length} chunks`);
  const bad = rows.filter(
    (r) => r.sealed[0] !== 2 || r.sealed.readUInt32BE(1) !== r.kek_version || r.sealed.length !== 1 + 4 + 12 + 48 + 12 + r.blocks * blockBytes + 16,
  );
  t.equal(bad.length, 0, 'every envelope: format byte 2, its KEK version, the wrapped data key, IV, ciphertext and tag');
  const { rows: waiting } = await k.kms.db.query("SELECT key_id::text AS id FROM qkd_key WHERE state = 'DELIVERED'");
  const held = await heldMaterial(k.kms.db, waiting.map((r) => r.id as string));
  t.ok(held > 0, `delivered-but-unfetched keys still hold their material (${held} positions)`);
  const { rows: ended } = await k.kms.db.query("SELECT key_id::text AS id FROM qkd_key WHERE state IN ('DESTROYED', 'EXPIRED')");
  t.ok(ended.length > 0, `${ended.length} keys destroyed`);
  t.equal(await heldMaterial(k.kms.db, ended.map((r) => r.id as string)), 0, 'destroyed keys hold no material in any stored chunk');
  // And the envelopes themselves agree: every position marked gone opens to zeros.
  const barrier = new Barrier(k.kms.wrapper);
  let goneBlocks = 0;
  const notZero: string[] = [];
  for (const r of rows.filter((x) => x.gone !== '{}')) {
    const plain = await barrier.open(r.sealed, { linkId: r.link, firstSeq: r.first, blocks: r.blocks });
    for (const g of intervalsOf(r.gone)) {
      goneBlocks += Number(g.hi - g.lo);
      const part = plain.subarray(Number(g.lo - BigInt(r.first)) * blockBytes, Number(g.hi - BigInt(r.first)) * blockBytes);
      if (part.some((b) => b !== 0)) notZero.push(`${r.link}/${g.lo}..${g.hi}`);
    }
    plain.fill(0);
  }
  t.ok(goneBlocks > 0, `${goneBlocks} destroyed positions inside chunks still stored`);
  t.same(notZero.slice(0, 3), [], 'every destroyed position opens to zeros');
});

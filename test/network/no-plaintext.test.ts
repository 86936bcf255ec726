import t from 'tap';
import { databaseHaystack, findLeaks } from '../helpers/leak-scan.js';
import { LINE, startTestNetwork, type TestNetwork } from '../helpers/network.js';

// No KME of a network — the trusted node in the middle included — holds a delivered key in its database (any
// column, any encoding), its audit events or its logs. The relay node records that it relayed, never the key.

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({ ...LINE, fill: 300 });
});
t.teardown(() => net?.close());

type Key = { key_ID: string; key: string };
const delivered: Key[] = [];

async function round(master: string, slave: string, body: object, fetchBy: string[]) {
  const enc = await net.client(master).post(`/api/v1/keys/${slave}/enc_keys`, body);
  if (enc.status !== 200) throw new Error(`enc_keys ${master} → ${slave}: ${enc.status} ${enc.text}`);
  delivered.push(...enc.body.keys);
  for (const s of fetchBy) {
    const dec = await net.client(s).post(`/api/v1/keys/${master}/dec_keys`, { key_IDs: enc.body.keys.map((k: Key) => ({ key_ID: k.key_ID })) });
    if (dec.status !== 200) throw new Error(`dec_keys by ${s}: ${dec.status} ${dec.text}`);
  }
}

t.test('keys in every kind of pair and every stage of life', async (t) => {
  for (let i = 0; i < 5; i++) {
    await round('SAE_A', 'SAE_B', { number: 5, size: 256 + 8 * i }, ['SAE_B']); // direct, fetched
    await round('SAE_B', 'SAE_A', { number: 5, size: 512 }, i % 2 ? ['SAE_A'] : []); // other direction, some waiting
    await round('SAE_A', 'SAE_C', { number: 5, size: 1024 }, ['SAE_C']); // relayed, fetched
    await round('SAE_C', 'SAE_A', { number: 3 }, []); // relayed, waiting at KME_A
    await round('SAE_A', 'SAE_B', { number: 2, additional_slave_SAE_IDs: ['SAE_C', 'SAE_D'] }, ['SAE_B', 'SAE_C']); // multicast
    await round('SAE_A', 'SAE_D', { number: 4, size: 64 }, ['SAE_D']); // same KME
    await round('SAE_A', i % 2 ? 'SAE_B' : 'SAE_C', { number: 2 }, []); // waiting at the slave's KME
  }
  t.equal(new Set(delivered.map((k) => k.key_ID)).size, delivered.length, `${delivered.length} distinct keys delivered`);
  for (const id of ['KME_A', 'KME_B', 'KME_C']) {
    const waiting = await net.kme(id).query(`SELECT count(*)::int AS n FROM qkd_key WHERE state IN ('RESERVED', 'DELIVERED')`);
    t.ok(waiting[0]!.n > 0, `some keys still wait (wrapped) at ${id}`);
  }
});

for (const id of ['KME_A', 'KME_B', 'KME_C']) {
  t.test(`${id}: no delivered key in its database, audit events or logs`, async (t) => {
    const keys = delivered.map((k) => Buffer.from(k.key, 'base64'));
    const { hay, tables, rows } = await databaseHaystack(net.kme(id).db.url);
    t.ok(tables.includes('audit_event') && rows > 100, `scanned ${tables.length} tables, ${rows} values`);
    const leaks = findLeaks(keys, { ...hay, texts: [...hay.texts, { where: 'log', text: net.kme(id).logs() }] });
    t.same(leaks.slice(0, 5), [], 'nothing found');
    t.ok(net.kme(id).logs().length > 1_000, 'it did log');
  });
}

t.test('the trusted node recorded the relays, without the keys', async (t) => {
  const relays = await net.kme('KME_B').query(`SELECT body FROM audit_event WHERE operation IN ('reserve', 'relay') AND actor IN ('kme:KME_A', 'kme:KME_C')`);
  t.ok(relays.length >= 10, `${relays.length} relay and reservation events at KME_B`);
  const relayed = relays.map((r) => JSON.parse(r.body as string)).filter((b) => b.operation === 'relay');
  t.ok(relayed.length > 0 && relayed.every((b) => Array.isArray(b.detail.relayed_to) && b.key_ids.length > 0), 'each names the keys and where they went');
  const left = await net.kme('KME_B').query(
    `SELECT count(*)::int AS n FROM qkd_key WHERE cardinality(relayed_to) > 0 AND (wrapped IS NOT NULL OR state NOT IN ('DESTROYED', 'EXPIRED')) AND slaves_pending = 0`,
  );
  t.equal(left[0]!.n, 0, 'it kept no copy of a key it only relayed');
});

import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import canonicalize from 'canonicalize';
import pg from 'pg';
import { EtsiClient, answered } from '../helpers/client.js';
import { eventually } from '../helpers/etsi.js';
import { findLeaks } from '../helpers/leak-scan.js';
import { startTestKms, testHsm } from '../helpers/kms.js';

// Issue 2 item 6 and DESIGN §7: every custody event is audited (ingest, delivery to the master, to each slave,
// destruction, every refusal) as canonical JSON with who, what, when and the outcome, never key bytes; the
// table is append-only at the database level.

interface AuditRow {
  seq: string;
  at: Date;
  actor: string;
  actor_cert: string | null;
  operation: string;
  outcome: string;
  key_ids: string[];
  body: string;
}

let k: Awaited<ReturnType<typeof startTestKms>>;
let db: pg.Client;
const fingerprint = (sae: string) => {
  const identity = { ...k.pki.saes, ...k.pki.strangers }[sae]!;
  return new X509Certificate(readFileSync(identity.cert)).fingerprint256;
};
const delivered: string[] = []; // base64 of every key this file saw

t.before(async () => {
  k = await startTestKms();
  db = new pg.Client({ connectionString: k.db.url });
  await db.connect();
  t.comment(`database: ${k.db.kind}`);
});
t.teardown(async () => {
  await db?.end();
  await k?.close();
});

const SELECT = `SELECT seq::text, at, actor, actor_cert, operation, outcome, key_ids::text[] AS key_ids, body FROM audit_event`;
async function events(where: string, params: unknown[] = []): Promise<AuditRow[]> {
  return (await db.query<AuditRow>(`${SELECT} WHERE ${where} ORDER BY audit_event.seq`, params)).rows;
}
const body = (r: AuditRow) => JSON.parse(r.body) as Record<string, any>;

t.test('ingest is audited, by the KME, block for block', async (t) => {
  const ingests = await events(`operation = 'ingest'`);
  t.ok(ingests.length >= 1, `${ingests.length} ingest events`);
  for (const r of ingests) {
    t.match(r, { actor: 'kme:KME_T', outcome: 'ok', actor_cert: null, key_ids: [] });
    t.match(body(r).detail, { link_id: 'KME_T-loopback', blocks: Number });
  }
  // one snapshot: every stored block was announced by an ingest event, and no more
  const { rows } = await db.query(`
    SELECT (SELECT COALESCE(sum(next_seq), 0)::int FROM link) AS stored,
           (SELECT COALESCE(sum((body::jsonb #>> '{detail,blocks}')::int), 0)::int FROM audit_event WHERE operation = 'ingest') AS audited,
           (SELECT COALESCE(sum((body::jsonb #>> '{detail,last_seq}')::bigint - (body::jsonb #>> '{detail,first_seq}')::bigint + 1), 0)::int
              FROM audit_event WHERE operation = 'ingest') AS ranges`);
  t.equal(rows[0].audited, rows[0].stored, `ingest events count ${rows[0].stored} blocks`);
  t.equal(rows[0].ranges, rows[0].stored, 'their seq ranges cover the same number of blocks');
});

t.test('enc_keys, then dec_keys by each slave: deliver_master, deliver_slave ×3, destroy after the last', async (t) => {
  const enc = await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', {
    number: 2,
    size: 512,
    additional_slave_SAE_IDs: ['SAE_C', 'SAE_D'],
  });
  t.equal(enc.status, 200, answered(enc));
  const ids: string[] = enc.body.keys.map((x: { key_ID: string }) => x.key_ID);
  delivered.push(...enc.body.keys.map((x: { key: string }) => x.key));
  const touching = `key_ids && $1::uuid[]`;

  const masters = await events(touching, [ids]);
  t.equal(masters.length, 1, 'one event so far for these keys');
  const m = masters[0]!;
  t.match(m, { operation: 'deliver_master', outcome: 'ok', actor: 'sae:SAE_A', actor_cert: fingerprint('SAE_A') });
  t.match(m.actor_cert, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'a SHA-256 fingerprint');
  t.same(m.key_ids, ids, 'key_ids column names the keys, in order');
  t.match(body(m), { key_ids: ids, actor_cert: fingerprint('SAE_A'), detail: { slaves: ['SAE_B', 'SAE_C', 'SAE_D'], size_bits: 512 } });

  const slaveSeqs: bigint[] = [];
  for (const [i, sae] of ['SAE_B', 'SAE_C', 'SAE_D'].entries()) {
    const res = await k.client(sae).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids.map((key_ID) => ({ key_ID })) });
    t.equal(res.status, 200, answered(res, sae));
    delivered.push(...res.body.keys.map((x: { key: string }) => x.key));
    const slaves = await events(`${touching} AND operation = 'deliver_slave'`, [ids]);
    t.equal(slaves.length, i + 1, `one deliver_slave per slave so far (${sae})`);
    const mine = slaves.filter((r) => r.actor === `sae:${sae}`);
    t.equal(mine.length, 1, `exactly one deliver_slave for ${sae}`);
    t.match(mine[0], { outcome: 'ok', actor_cert: fingerprint(sae), key_ids: ids });
    t.match(body(mine[0]!), { detail: { master: 'SAE_A' } });
    slaveSeqs.push(BigInt(mine[0]!.seq));
    const destroys = await events(`${touching} AND operation = 'destroy'`, [ids]);
    if (sae !== 'SAE_D') t.equal(destroys.length, 0, `no destroy while a slave still waits (after ${sae})`);
    else {
      t.equal(destroys.length, 1, 'one destroy event after the last slave');
      t.match(destroys[0], { actor: 'sae:SAE_D', outcome: 'ok', key_ids: ids });
      t.ok(slaveSeqs.every((s) => BigInt(destroys[0]!.seq) > s), 'destroy comes after every deliver_slave');
    }
  }
  t.ok(BigInt(m.seq) < slaveSeqs[0]!, 'deliver_master comes before the slaves');
  const all = await events(touching, [ids]);
  t.same(all.map((r) => r.operation), ['deliver_master', 'deliver_slave', 'deliver_slave', 'deliver_slave', 'destroy']);
});

t.test('refused requests are audited: a 400 by an SAE one event each; a stranger and no certificate counted in a summary', async (t) => {
  await k.kms.refusals.flush();
  const { rows } = await db.query(`SELECT COALESCE(max(seq), 0)::text AS s FROM audit_event`);
  const since = rows[0].s as string;

  const bad = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys?size=100');
  t.equal(bad.status, 400);
  const stranger = await k.client('SAE_X').get('/api/v1/keys/SAE_B/status');
  t.equal(stranger.status, 401);
  const anonymous = new EtsiClient(k.kms.url, k.pki.ca, {});
  let none;
  try {
    none = await anonymous.get('/api/v1/keys/SAE_A/dec_keys?key_ID=00000000-0000-4000-8000-000000000000');
    await anonymous.get('/api/v1/keys/SAE_A/status');
  } finally {
    anonymous.close();
  }
  t.equal(none.status, 401);
  await k.kms.refusals.flush();
  const list = await events(`outcome = 'refused' AND seq > $1`, [since]);
  // A summary is written at most once per window (10 s), so the three may be split over two of them.
  const summaries = list.filter((r) => r.actor === 'anonymous');
  t.equal(list.length - summaries.length, 1, 'one event for the 400; summaries for the unidentified callers');

  const by400 = list.filter((r) => body(r).detail?.status === 400);
  t.equal(by400.length, 1, 'one event for the 400');
  t.match(by400[0], { actor: 'sae:SAE_A', actor_cert: fingerprint('SAE_A'), operation: 'deliver_master', key_ids: [] });
  t.match(body(by400[0]!).detail, { method: 'GET', path: '/api/v1/keys/SAE_B/enc_keys', reason: 'size shall be a multiple of 8' });

  for (const summary of summaries) t.match(summary, { operation: 'request', actor_cert: null }, 'a summary names no single certificate');
  const details = summaries.map((r) => body(r).detail);
  t.equal(details.reduce((n, d) => n + d.count, 0), 3, 'all three are counted');
  const reasons = details.flatMap((d) => Object.keys(d.by_reason));
  t.ok(reasons.some((r) => /not registered/.test(r)) && reasons.some((r) => /no client certificate/.test(r)), 'both reasons');
  const d = { samples: details.flatMap((x) => x.samples) };
  const x = d.samples.find((s: any) => s.cert_sha256 === fingerprint('SAE_X'));
  t.match(x, { operation: 'status', path: '/api/v1/keys/SAE_B/status', status: 401, reason: /not registered/ }, 'the stranger sampled with its fingerprint');
  const anon = d.samples.find((s: any) => s.path === '/api/v1/keys/SAE_A/dec_keys');
  t.match(anon, { operation: 'deliver_slave', status: 401, reason: /no client certificate/ }, 'the certificate-less request sampled');
  t.notOk('cert_sha256' in anon, 'without a fingerprint');
});

t.test('a flood of certificate-less requests grows the log by one summary, not a row each', async (t) => {
  await k.kms.refusals.flush();
  const { rows } = await db.query(`SELECT count(*)::int AS n FROM audit_event`);
  const anonymous = new EtsiClient(k.kms.url, k.pki.ca, {});
  try {
    for (let i = 0; i < 200; i++) await anonymous.get('/api/v1/keys/SAE_B/status');
  } finally {
    anonymous.close();
  }
  await k.kms.refusals.flush();
  const after = await db.query(`SELECT count(*)::int AS n FROM audit_event`);
  t.ok(after.rows[0].n - rows[0].n <= 2, `200 refusals, ${after.rows[0].n - rows[0].n} summary event(s) (one per 10 s window at most)`);
});

t.test('a request that fails with 503 is audited as failed', { skip: testHsm() === 'mock' ? false : 'needs hsm-mock to simulate an HSM outage' }, async (t) => {
  await k.kms.refusals.flush();
  const { rows } = await db.query(`SELECT COALESCE(max(seq), 0)::text AS s FROM audit_event`);
  k.mock!.simulateOutage(true);
  let res;
  try {
    res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  } finally {
    k.mock!.simulateOutage(false);
  }
  t.equal(res.status, 503);
  await k.kms.refusals.flush();
  const failed = await events(`outcome = 'failed' AND seq > $1`, [rows[0].s]);
  t.equal(failed.length, 1);
  t.match(failed[0], { actor: 'sae:SAE_A', operation: 'deliver_master' });
  t.match(body(failed[0]!).detail, { status: 503, path: '/api/v1/keys/SAE_B/enc_keys' });
});

t.test('every body is canonical JSON and the columns are exactly its fields', async (t) => {
  const all = await events('true');
  t.ok(all.length > 5, `${all.length} events`);
  let checked = 0;
  for (const r of all) {
    const b = body(r);
    const problems: string[] = [];
    if (canonicalize(b) !== r.body) problems.push('not canonical');
    if (b.v !== 1) problems.push('v');
    if (b.actor !== r.actor) problems.push('actor');
    if (b.operation !== r.operation) problems.push('operation');
    if (b.outcome !== r.outcome) problems.push('outcome');
    if ((b.actor_cert ?? null) !== r.actor_cert) problems.push('actor_cert');
    if (JSON.stringify(b.key_ids) !== JSON.stringify(r.key_ids)) problems.push('key_ids');
    if (new Date(b.at).getTime() !== r.at.getTime()) problems.push('at');
    if (problems.length) t.fail(`event ${r.seq}: ${problems.join(', ')}: ${r.body}`);
    else checked++;
  }
  t.equal(checked, all.length, 'all events consistent');
});

t.test('no audit body carries key material', async (t) => {
  t.ok(delivered.length >= 8, `${delivered.length} delivered keys to look for`);
  const all = await events('true');
  const leaks = findLeaks(
    delivered.map((x) => Buffer.from(x, 'base64')),
    { texts: all.map((r) => ({ where: `audit_event ${r.seq}`, text: r.body })), bytes: [] },
  );
  t.same(leaks.map((l) => `${l.where}: ${l.how}`), [], 'no key in any body, in any encoding');
  t.notOk(all.some((r) => delivered.some((key) => r.body.includes(key))), 'no body contains a key as base64');
});

t.test('audit_event refuses UPDATE, DELETE and TRUNCATE', async (t) => {
  const before = await events('true');
  t.ok(before.length > 0);
  for (const sql of [
    `UPDATE audit_event SET actor = 'sae:MALLORY'`,
    `UPDATE audit_event SET body = '{}' WHERE seq = ${before[0]!.seq}`,
    `DELETE FROM audit_event`,
    `DELETE FROM audit_event WHERE seq = ${before[before.length - 1]!.seq}`,
    `TRUNCATE audit_event`,
  ]) {
    await t.rejects(db.query(sql), { message: /append-only/, code: '42501' }, sql);
  }
  const after = await events(`seq <= $1`, [before[before.length - 1]!.seq]);
  t.same(after, before, 'every event is still there, unchanged');
});

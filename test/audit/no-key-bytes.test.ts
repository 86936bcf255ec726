import t from 'tap';
import fc from 'fast-check';
import { EtsiClient, type Response } from '../helpers/client.js';
import { eventually } from '../helpers/etsi.js';
import { databaseHaystack, findLeaks, type Haystack } from '../helpers/leak-scan.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { lastSeal } from '../../src/store/seals.js';

// Issue 12 item 1: random requests through every path — enc_keys (GET and POST, good and bad sizes, counts and
// slaves), dec_keys (keys handed out, unknown, malformed, by the wrong SAE), status, bodies that are not JSON,
// unknown routes, the auditor API, callers without a certificate — then every log line, every audit event, every
// error body, every auditor answer and every database column is searched for the keys handed out, in every encoding
// (test/helpers/leak-scan.ts). Only the 200 answers of enc_keys and dec_keys may carry them.

let k: TestKms;
let anonymous: EtsiClient;
const keys: Buffer[] = [];
const keyIds: string[] = [];
const scanned: Array<{ where: string; text: string }> = []; // answers that must not carry keys

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 2_000 } });
  anonymous = new EtsiClient(k.kms.url, k.pki.ca, {});
});
t.teardown(async () => {
  anonymous?.close();
  await k?.close();
});

const SAE = fc.constantFrom('SAE_A', 'SAE_B', 'SAE_C', 'SAE_D', 'SAE_X');
const SIZE = fc.constantFrom(64, 100, 128, 256, 512, 1024, 0, -8);
const anyKeyId = () => fc.oneof(fc.constant('delivered'), fc.uuid(), fc.constantFrom('not-a-uuid', '', '00000000-0000-0000-0000-000000000000'));
type Call = { who: string; method: 'GET' | 'POST'; path: string; body?: string };

// Requests that succeed, weighted up so that keys are handed out (to master and slave) between the refusals.
const goodEnc: fc.Arbitrary<Call> = fc.record({ number: fc.integer({ min: 1, max: 3 }), size: fc.constantFrom(128, 256, 512) }).map((r) => ({
  who: 'SAE_A',
  method: 'POST' as const,
  path: '/api/v1/keys/SAE_B/enc_keys',
  body: JSON.stringify({ number: r.number, size: r.size }),
}));
const goodDec: fc.Arbitrary<Call> = fc.constant({ who: 'SAE_B', method: 'GET' as const, path: '/api/v1/keys/SAE_A/dec_keys?key_ID=delivered' });

const calls: fc.Arbitrary<Call> = fc.oneof(
  { arbitrary: goodEnc, weight: 4 },
  { arbitrary: goodDec, weight: 3 },
  fc.record({ who: SAE, slave: SAE, number: fc.integer({ min: 0, max: 4 }), size: SIZE }).map((r) => ({
    who: r.who,
    method: 'GET' as const,
    path: `/api/v1/keys/${r.slave}/enc_keys?number=${r.number}&size=${r.size}`,
  })),
  fc.record({ who: SAE, slave: SAE, number: fc.integer({ min: 1, max: 3 }), size: SIZE, extra: fc.subarray(['SAE_B', 'SAE_C', 'SAE_D', 'SAE_X']) }).map((r) => ({
    who: r.who,
    method: 'POST' as const,
    path: `/api/v1/keys/${r.slave}/enc_keys`,
    body: JSON.stringify({ number: r.number, size: r.size, ...(r.extra.length ? { additional_slave_SAE_IDs: r.extra } : {}) }),
  })),
  fc.record({ who: SAE, master: SAE, id: anyKeyId(), post: fc.boolean() }).map((r) => ({
    who: r.who,
    method: r.post ? ('POST' as const) : ('GET' as const),
    path: r.post ? `/api/v1/keys/${r.master}/dec_keys` : `/api/v1/keys/${r.master}/dec_keys?key_ID=${r.id}`,
    body: r.post ? JSON.stringify({ key_IDs: [{ key_ID: r.id }] }) : undefined,
  })),
  fc.record({ who: SAE, slave: SAE }).map((r) => ({ who: r.who, method: 'GET' as const, path: `/api/v1/keys/${r.slave}/status` })),
  fc.record({ who: SAE, text: fc.string({ maxLength: 40 }) }).map((r) => ({ who: r.who, method: 'POST' as const, path: '/api/v1/keys/SAE_B/enc_keys', body: `{"number": ${r.text}` })),
  fc.record({ who: fc.constantFrom('SAE_A', 'anonymous'), path: fc.constantFrom('/api/v2/keys', '/api/v1/keys/SAE_B/status/x', '/', '/kmapi/v1/ext_keys') }).map((r) => ({ who: r.who, method: 'GET' as const, path: r.path })),
  fc.record({ who: fc.constantFrom('AUDITOR_1', 'SAE_A', 'anonymous'), id: anyKeyId(), what: fc.constantFrom('events', 'key', 'sae', 'checkpoint', 'inclusion') }).map((r) => ({
    who: r.who,
    method: 'GET' as const,
    path: { events: '/audit/v1/events?limit=50', key: `/audit/v1/events?key_id=${r.id}`, sae: '/audit/v1/events?sae_id=SAE_B', checkpoint: '/audit/v1/checkpoint', inclusion: '/audit/v1/proofs/inclusion?seq=1' }[r.what],
  })),
  fc.record({ who: fc.constant('anonymous'), slave: SAE }).map((r) => ({ who: r.who, method: 'GET' as const, path: `/api/v1/keys/${r.slave}/enc_keys` })),
);

async function run(call: Call): Promise<void> {
  const path = call.path.replace('delivered', keyIds[keyIds.length - 1] ?? 'none');
  const body = call.body?.replace('delivered', keyIds[keyIds.length - 1] ?? 'none');
  const client = call.who === 'anonymous' ? anonymous : k.client(call.who);
  const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
  const res: Response = await client.send(call.method, path, body, headers);
  const handsOutKeys = res.status === 200 && /\/(enc|dec)_keys/.test(path) && path.startsWith('/api/');
  if (handsOutKeys) {
    for (const key of (res.body as { keys: Array<{ key_ID: string; key: string }> }).keys) {
      keys.push(Buffer.from(key.key, 'base64'));
      keyIds.push(key.key_ID);
    }
  } else {
    scanned.push({ where: `answer ${res.status} to ${call.who} ${call.method} ${path}`, text: res.text });
  }
}

t.test('random requests through every path', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(calls, { minLength: 1, maxLength: 12 }), async (batch) => {
      for (const c of batch) await run(c);
    }),
    { numRuns: 25 },
  );
  t.ok(keys.length > 20, `${keys.length} keys handed out, ${scanned.length} other answers`);
});

t.test('no key handed out appears in a log line, an event, an error body, an auditor answer or a database column', async (t) => {
  await k.kms.refusals.flush();
  const { rows } = await k.kms.db.query<{ max: string }>('SELECT max(seq) AS max FROM audit_event');
  await eventually(async () => {
    await k.kms.sealer.sealOnce();
    if (((await lastSeal(k.kms.db))?.treeSize ?? 0) < Number(rows[0]!.max)) throw new Error('not sealed yet');
  }, 10_000);
  const exported = await k.client('AUDITOR_1').get('/audit/v1/export');
  t.equal(exported.status, 200);
  const { hay: db, columns } = await databaseHaystack(k.db.url);
  const hay: Haystack = {
    texts: [...db.texts, ...scanned, { where: 'the KME log', text: k.logs() }, { where: 'the export bundle', text: exported.text }],
    bytes: db.bytes,
  };
  const leaks = findLeaks(keys, hay);
  t.same(leaks, [], `searched ${columns} columns, ${scanned.length} answers, the log (${k.logs().length} bytes) and the export for ${keys.length} keys`);
  t.ok(k.logs().length > 0 && exported.text.includes(keyIds[0]!), 'the haystacks are not empty: the export names the keys by key_ID');
});

import { readFileSync } from 'node:fs';
import t from 'tap';
import { OPENAPI_FILES } from '../../src/routes/openapi-document.js';
import { eventually } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { availableOwned, eraseNow, heldMaterial } from '../helpers/pool-state.js';
import { answered } from '../helpers/client.js';

// Every request form and error case of ../shared/etsi-gs-qkd-014.md, over real mutual TLS, against a real
// database. One KME for the whole file; the pool is refilled by its simulator as tests take keys.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

let k: TestKms;
t.before(async () => {
  k = await startTestKms();
});
t.teardown(() => k.close());

const A = () => k.client('SAE_A');
const B = () => k.client('SAE_B');

t.test('status: every Table 9 field, integers, exact and bounded counts', async (t) => {
  const res = await A().get('/api/v1/keys/SAE_B/status', { 'content-type': 'application/json' });
  t.equal(res.status, 200);
  t.same(Object.keys(res.body).sort(), [
    'key_size', 'master_SAE_ID', 'max_SAE_ID_count', 'max_key_count', 'max_key_per_request', 'max_key_size',
    'min_key_size', 'slave_SAE_ID', 'source_KME_ID', 'status_extension', 'stored_key_count', 'target_KME_ID',
  ].sort());
  // The optional extension carries the link's figures for operators (and no Table 9 field moves into it).
  t.match(res.body.status_extension, {
    qkms_link: { link_id: 'KME_T-loopback', device_up: true, qber: Number, ingest_bits_per_second: Number, ingested_blocks: Number },
  });
  t.match(res.body, {
    source_KME_ID: 'KME_T', target_KME_ID: 'KME_T', master_SAE_ID: 'SAE_A', slave_SAE_ID: 'SAE_B',
    key_size: 256, max_key_count: 2000, max_key_per_request: 128, max_key_size: 1024, min_key_size: 64, max_SAE_ID_count: 8,
  });
  for (const [field, value] of Object.entries(res.body)) {
    if (typeof value === 'number') t.ok(Number.isInteger(value) && value <= 2 ** 31 - 1, `${field} is an int32`);
  }
  t.ok(res.body.status_extension.qkms_link.ingested_blocks >= 2000, 'the link figures count what was ingested');
  t.equal(res.body.stored_key_count, 2000, 'the pool is full after start-up');
  t.ok(res.body.min_key_size <= res.body.key_size && res.body.key_size <= res.body.max_key_size);
  t.match(res.headers['content-type'], /application\/json/);
});

t.test('status count is exact: it drops by exactly the blocks delivered', async (t) => {
  await k.kms.ingesters.get('KME_T-loopback')!.stop(); // hold the pool still while counting
  try {
    const before = (await A().get('/api/v1/keys/SAE_B/status')).body.stored_key_count;
    const got = await A().get('/api/v1/keys/SAE_B/enc_keys?number=3&size=512'); // 512 bits = 2 blocks each
    t.equal(got.status, 200);
    const after = (await A().get('/api/v1/keys/SAE_B/status')).body.stored_key_count;
    t.equal(before - after, 6);
    t.equal(await availableOwned(k.kms.db), after, 'status equals the number of free positions in the pool');
  } finally {
    k.kms.ingesters.get('KME_T-loopback')!.start();
  }
});

t.test('GET enc_keys with and without query, POST with empty body, POST {}', async (t) => {
  const forms = [
    await A().get('/api/v1/keys/SAE_B/enc_keys'),
    await A().get('/api/v1/keys/SAE_B/enc_keys', { 'content-type': 'application/json' }),
    await A().send('POST', '/api/v1/keys/SAE_B/enc_keys'),
    await A().send('POST', '/api/v1/keys/SAE_B/enc_keys', '', { 'content-type': 'application/json' }),
    await A().post('/api/v1/keys/SAE_B/enc_keys', {}),
  ];
  for (const res of forms) {
    t.equal(res.status, 200, answered(res));
    t.equal(res.body.keys.length, 1);
    t.equal(Buffer.from(res.body.keys[0].key, 'base64').length * 8, 256, 'default size is key_size');
  }
  const sized = await A().get('/api/v1/keys/SAE_B/enc_keys?number=3&size=1024');
  t.equal(sized.body.keys.length, 3);
  for (const key of sized.body.keys) {
    t.match(key.key_ID, UUID, 'canonical lowercase UUID');
    t.match(key.key, BASE64, 'padded standard base64');
    t.equal(Buffer.from(key.key, 'base64').length, 128);
  }
});

t.test('every size from min to max in steps of 8 gives exactly that many bits', async (t) => {
  for (let size = 64; size <= 1024; size += 8) {
    const res = await A().post('/api/v1/keys/SAE_B/enc_keys', { size });
    if (res.status !== 200) t.fail(`size ${size}: ${res.status} ${res.text}`);
    else if (Buffer.from(res.body.keys[0].key, 'base64').length * 8 !== size) t.fail(`size ${size}: wrong length`);
  }
  t.pass('all 121 sizes');
});

t.test('number up to max_key_per_request', async (t) => {
  const res = await A().post('/api/v1/keys/SAE_B/enc_keys', { number: 128, size: 64 });
  t.equal(res.status, 200);
  t.equal(res.body.keys.length, 128);
  t.equal(new Set(res.body.keys.map((k: { key_ID: string }) => k.key_ID)).size, 128, 'distinct key_IDs');
});

t.test('master gets keys, slave gets the same keys once (GET and POST forms)', async (t) => {
  const enc = await A().post('/api/v1/keys/SAE_B/enc_keys', { number: 3 });
  const [k1, k2, k3] = enc.body.keys;
  const one = await B().get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${k1.key_ID}`);
  t.equal(one.status, 200);
  t.same(one.body, { keys: [k1], key_container_extension: { qkms_key_origin: 'qkd' } });
  const two = await B().post('/api/v1/keys/SAE_A/dec_keys', {
    key_IDs: [{ key_ID: k2.key_ID, master_SAE_ID: 'SAE_A' }, { key_ID: k3.key_ID.toUpperCase() }], // unknown field tolerated
  });
  t.equal(two.status, 200, answered(two));
  t.same(two.body, { keys: [k2, k3], key_container_extension: { qkms_key_origin: 'qkd' } }, 'same material, canonical IDs, in request order');
  const again = await B().get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${k1.key_ID}`);
  t.equal(again.status, 400);
  t.equal(again.body.message, 'one or more keys specified are not found on KME');
});

t.test('dec_keys 401 rule: only a named slave may fetch', async (t) => {
  const enc = await A().get('/api/v1/keys/SAE_B/enc_keys');
  const id = enc.body.keys[0].key_ID;
  for (const [sae, why] of [['SAE_A', 'the master itself'], ['SAE_C', 'an SAE not named']] as const) {
    const res = await k.client(sae).get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
    t.equal(res.status, 401, why);
    t.type(res.body.message, 'string');
    t.notOk(res.text.includes(enc.body.keys[0].key), 'no key material in the refusal');
  }
  const ok = await B().get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
  t.equal(ok.status, 200, 'the refusals consumed nothing');
});

t.test('dec_keys naming the wrong master, or unknown keys, is 400 and delivers nothing', async (t) => {
  const enc = await A().post('/api/v1/keys/SAE_B/enc_keys', { number: 2 });
  const [k1, k2] = enc.body.keys;
  const wrongMaster = await B().get(`/api/v1/keys/SAE_C/dec_keys?key_ID=${k1.key_ID}`);
  t.equal(wrongMaster.status, 400);
  t.equal(wrongMaster.body.message, 'one or more keys specified are not found on KME');
  const mixed = await B().post('/api/v1/keys/SAE_A/dec_keys', {
    key_IDs: [{ key_ID: k1.key_ID }, { key_ID: '00000000-0000-4000-8000-000000000000' }],
  });
  t.equal(mixed.status, 400, 'one unknown key fails the whole request');
  const both = await B().post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: [{ key_ID: k1.key_ID }, { key_ID: k2.key_ID }] });
  t.equal(both.status, 200, 'and nothing was consumed by the failed request');
});

t.test('multicast: each additional slave fetches the same key once', async (t) => {
  const enc = await A().post('/api/v1/keys/SAE_B/enc_keys', { number: 2, additional_slave_SAE_IDs: ['SAE_C', 'SAE_D'] });
  t.equal(enc.status, 200, answered(enc));
  const ids = enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
  for (const sae of ['SAE_B', 'SAE_C', 'SAE_D']) {
    const res = await k.client(sae).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
    t.equal(res.status, 200, `${sae} gets the keys`);
    t.same(res.body.keys, enc.body.keys);
    const again = await k.client(sae).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
    t.equal(again.status, 400, `${sae} gets them only once`);
  }
  const keyIds = ids.map((i: { key_ID: string }) => i.key_ID);
  const { rows } = await k.kms.db.query("SELECT count(*)::int AS n FROM qkd_key WHERE key_id = ANY($1::uuid[]) AND state <> 'DESTROYED'", [keyIds]);
  t.equal(rows[0].n, 0, 'keys destroyed once every named slave has them');
  await eraseNow(k.kms.db, k.kms.wrapper);
  t.equal(await heldMaterial(k.kms.db, keyIds), 0, 'and their material erased from the stored chunks');
});

t.test('material is kept until the last slave has fetched', async (t) => {
  const enc = await A().post('/api/v1/keys/SAE_B/enc_keys', { additional_slave_SAE_IDs: ['SAE_C'] });
  const id = enc.body.keys[0].key_ID;
  await B().get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
  await eraseNow(k.kms.db, k.kms.wrapper);
  t.equal(await heldMaterial(k.kms.db, [id]), 1, 'SAE_C still waits, so the material stays');
  await k.client('SAE_C').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
  const gone = await k.kms.db.query('SELECT state FROM qkd_key WHERE key_id = $1', [id]);
  t.same(gone.rows, [{ state: 'DESTROYED' }]);
  await eraseNow(k.kms.db, k.kms.wrapper);
  t.equal(await heldMaterial(k.kms.db, [id]), 0, 'erased from its chunk once the last slave has it');
});

type Case = [name: string, method: 'GET' | 'POST', path: string, body: string | undefined, status: number, message?: string | RegExp];
const cases: Case[] = [
  ['size 0', 'GET', '/api/v1/keys/SAE_B/enc_keys?size=0', undefined, 400, /size is in bits/],
  ['negative size', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"size":-8}', 400, /size is in bits/],
  ['size not a multiple of 8', 'GET', '/api/v1/keys/SAE_B/enc_keys?size=100', undefined, 400, 'size shall be a multiple of 8'],
  ['size in bytes (32) below min', 'GET', '/api/v1/keys/SAE_B/enc_keys?size=32', undefined, 400, /bits.*min_key_size/],
  ['size above max', 'GET', '/api/v1/keys/SAE_B/enc_keys?size=2048', undefined, 400, /max_key_size/],
  ['non-integer size', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"size":256.5}', 400, /size must be an integer/],
  ['string size', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"size":"abc"}', 400, /size must be an integer/],
  ['numeric string size in a body', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"size":"256"}', 400, /size must be an integer/],
  ['non-numeric query size', 'GET', '/api/v1/keys/SAE_B/enc_keys?size=abc', undefined, 400, /size must be an integer/],
  ['number 0', 'GET', '/api/v1/keys/SAE_B/enc_keys?number=0', undefined, 400, /max_key_per_request/],
  ['negative number', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"number":-1}', 400, /number must be between/],
  ['number 1.5', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"number":1.5}', 400, /number must be an integer/],
  ['number above max', 'GET', '/api/v1/keys/SAE_B/enc_keys?number=129', undefined, 400, /max_key_per_request/],
  ['JSON array body', 'POST', '/api/v1/keys/SAE_B/enc_keys', '[1,2]', 400, /must be an object/],
  ['malformed JSON', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"number":', 400, /not valid JSON/],
  ['duplicate additional slaves', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"additional_slave_SAE_IDs":["SAE_C","SAE_C"]}', 400, /twice/],
  ['blank additional slave', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"additional_slave_SAE_IDs":[" "]}', 400, /empty/],
  ['additional slave = master', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"additional_slave_SAE_IDs":["SAE_A"]}', 400, /master/],
  ['additional slave = slave', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"additional_slave_SAE_IDs":["SAE_B"]}', 400, /slave/],
  ['unregistered additional slave', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"additional_slave_SAE_IDs":["SAE_Q"]}', 400, /not registered/],
  ['too many additional slaves', 'POST', '/api/v1/keys/SAE_B/enc_keys', JSON.stringify({ additional_slave_SAE_IDs: Array.from({ length: 9 }, (_, i) => `S${i}`) }), 400, /max_SAE_ID_count/],
  ['additional slaves as a GET query', 'GET', '/api/v1/keys/SAE_B/enc_keys?additional_slave_SAE_IDs=SAE_C,SAE_D', undefined, 400, /additional_slave_SAE_IDs.*POST/],
  ['unknown mandatory extension', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"extension_mandatory":[{"abc_route_type":"direct"}]}', 400, 'not all extension_mandatory parameters are supported'],
  ['master names itself as slave', 'GET', '/api/v1/keys/SAE_A/enc_keys', undefined, 400, /itself/],
  ['unregistered slave', 'GET', '/api/v1/keys/SAE_Q/status', undefined, 400, /not registered/],
  ['empty path SAE ID', 'GET', '/api/v1/keys//enc_keys', undefined, 400, /empty/],
  ['empty path SAE ID (status)', 'GET', '/api/v1/keys//status', undefined, 400, /empty/],
  ['key_ID not a UUID', 'GET', '/api/v1/keys/SAE_A/dec_keys?key_ID=42', undefined, 400, /not a UUID/],
  ['key_IDs as a GET list', 'GET', '/api/v1/keys/SAE_A/dec_keys?key_IDs=a,b', undefined, 400, /key_IDs.*POST/],
  ['dec_keys GET without key_ID', 'GET', '/api/v1/keys/SAE_A/dec_keys', undefined, 400, /key_ID is required/],
  ['dec_keys with empty key_IDs', 'POST', '/api/v1/keys/SAE_A/dec_keys', '{"key_IDs":[]}', 400, /at least one/],
  ['dec_keys with a key_ID that is a number', 'POST', '/api/v1/keys/SAE_A/dec_keys', '{"key_IDs":[{"key_ID":5}]}', 400, /must be a string/],
  ['wrong content type', 'POST', '/api/v1/keys/SAE_B/enc_keys', '{"number":1}', 400, /Content-Type/],
  ['unknown route', 'GET', '/api/v2/keys/SAE_B/status', undefined, 404, /no such endpoint/],
  ['wrong method', 'POST', '/api/v1/keys/SAE_B/status', '{}', 405, /use GET/],
];

t.test('bad input: the right status and an ETSI Error body, never a stack trace', async (t) => {
  for (const [name, method, path, body, status, message] of cases) {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': name === 'wrong content type' ? 'text/plain' : 'application/json' };
    const res = await A().send(method, path, body, headers);
    t.equal(res.status, status, answered(res, `${name}: status`));
    t.type(res.body?.message, 'string', `${name}: Error body with a message`);
    if (typeof message === 'string') t.equal(res.body?.message, message, `${name}: mandated message`);
    else if (message) t.match(res.body?.message, message, `${name}: message`);
    t.notMatch(res.text, /at .*\.(ts|js):\d+|Error:/, `${name}: no stack trace`);
  }
});

t.test('an unknown optional extension is ignored', async (t) => {
  const res = await A().post('/api/v1/keys/SAE_B/enc_keys', { extension_optional: [{ abc_thing: 1 }], unknown_field: true });
  t.equal(res.status, 200);
  t.equal(res.body.keys.length, 1);
});

t.test('refused requests are audited, with who and why', async (t) => {
  const refusals = () =>
    k.kms.db.query(
      "SELECT actor, operation, outcome, body FROM audit_event WHERE outcome = 'refused' AND body LIKE '%multiple of 8%' ORDER BY seq DESC",
    );
  const before = (await refusals()).rows.length;
  await A().get('/api/v1/keys/SAE_B/enc_keys?size=100');
  // refusals are written off the request path: poll for this one rather than guess how long it takes
  const rows = await eventually(async () => {
    const r = (await refusals()).rows;
    return r.length > before ? r : undefined;
  });
  t.ok(rows, 'a new refusal event');
  t.match(rows?.[0], { actor: 'sae:SAE_A', operation: 'deliver_master', outcome: 'refused' });
});

t.test('the running service serves the published OpenAPI document', async (t) => {
  const res = await A().get('/openapi.json');
  t.equal(res.status, 200);
  t.same(res.body, JSON.parse(readFileSync(OPENAPI_FILES.etsi, 'utf8')));
});

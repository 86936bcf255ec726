import t from 'tap';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { etsiErrorProblem } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { availableOwned } from '../helpers/pool-state.js';
import { answered } from '../helpers/client.js';

// Stored material that fails its integrity check (the review found that one bad block at the head of the claim
// order made every enc_keys of its link answer 503 until someone intervened). It must be set aside — COMPROMISED,
// audited, logged — and the link keep serving. But when nothing opens at all, the key-encryption key is the suspect
// (a wrong HSM token or key): then nothing may be set aside, or a misconfiguration would destroy a healthy pool.

let k: TestKms;
const kek = Buffer.alloc(32, 3);
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 1000 }, wrapper: createMockKeyWrapper({ kek }) });
});
t.teardown(() => k?.close());

/** The first chunks in claim order (their first positions). */
const headChunks = async (n: number) =>
  (
    await k.kms.db.query(
      `SELECT first_seq::text AS first FROM key_chunk WHERE owned AND confirmed AND NOT set_aside AND next_free < blocks
        ORDER BY first_seq LIMIT $1`,
      [n],
    )
  ).rows.map((r) => r.first as string);

/** Flips one byte of each chunk's envelope: what a disk fault or a tampering DBA would leave. */
const corrupt = (firsts: string[], at: number) =>
  k.kms.db.query(
    `UPDATE key_chunk SET sealed = overlay(sealed PLACING decode(lpad(to_hex(get_byte(sealed, $2) # 1), 2, '0'), 'hex') FROM $2 + 1 FOR 1)
      WHERE first_seq = ANY($1::bigint[])`,
    [firsts, at],
  );

t.test('corrupted chunks at the head of the claim order are set aside and the link keeps serving', async (t) => {
  await k.kms.ingesters.get('KME_T-loopback')!.stop(); // hold the pool still
  const bad = await headChunks(2);
  await corrupt(bad.slice(0, 1), 30); // in the wrapped data key
  await corrupt(bad.slice(1), 200); // in the data
  const a = k.client('SAE_A');
  for (let i = 0; i < 5; i++) {
    const res = await a.get('/api/v1/keys/SAE_B/enc_keys');
    t.equal(res.status, 200, answered(res, `request ${i + 1} is served`));
  }
  const { rows } = await k.kms.db.query(
    `SELECT first_seq::text AS first, set_aside, length(sealed) > 0 AS kept FROM key_chunk WHERE first_seq = ANY($1::bigint[]) ORDER BY first_seq`,
    [bad],
  );
  t.same(rows, bad.map((first) => ({ first, set_aside: true, kept: true })), 'both set aside, ciphertext kept for investigation');
  const audit = await k.kms.db.query(`SELECT body FROM audit_event WHERE operation = 'set_aside' ORDER BY seq`);
  const bodies = audit.rows.map((r) => JSON.parse(r.body));
  t.ok(bodies.every((b) => b.outcome === 'failed' && b.detail.reason === 'integrity check failed'), 'audited as failed integrity checks');
  t.same(bodies.flatMap((b) => b.detail.chunks.map((x: { first_seq: string }) => x.first_seq)).sort(), [...bad].sort(), 'naming exactly the bad chunks');
  t.match(k.logs(), /failed its integrity check: set aside/, 'logged');
  const status = await a.get('/api/v1/keys/SAE_B/status');
  t.equal(status.body.stored_key_count, await availableOwned(k.kms.db), 'stored_key_count no longer counts them');
});

t.test('dec_keys: a key whose chunk was damaged after delivery is destroyed as compromised; requests batched with it are served', async (t) => {
  const a = k.client('SAE_A');
  const b = k.client('SAE_B');
  const first = await a.get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(first.status, 200, answered(first));
  const damagedId: string = first.body.keys[0].key_ID;
  // The next keys come from another chunk: corrupting the first key's chunk must not touch them.
  const { rows } = await k.kms.db.query(
    `SELECT c.first_seq::text AS first FROM qkd_key q JOIN key_chunk c ON c.link_id = q.link_id
        AND int8range(c.first_seq, c.first_seq + c.blocks) && q.seqs WHERE q.key_id = $1`,
    [damagedId],
  );
  await k.kms.db.query('UPDATE key_chunk SET next_free = blocks WHERE first_seq = $1', [rows[0]!.first]); // hand out nothing more from it
  const healthy = await Promise.all(Array.from({ length: 6 }, () => a.get('/api/v1/keys/SAE_B/enc_keys')));
  t.ok(healthy.every((r) => r.status === 200), 'six more keys from other chunks');
  await corrupt([rows[0]!.first as string], 200);

  const answers = await Promise.all([
    b.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${damagedId}`),
    ...healthy.map((h) => b.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${h.body.keys[0].key_ID}`)),
  ]);
  t.equal(answers[0]!.status, 503, 'the damaged key: 503');
  t.notOk(etsiErrorProblem(answers[0]!));
  t.match(answers[0]!.body.message, /failed its integrity check: destroyed as compromised/);
  t.same(
    answers.slice(1).map((r, i) => (r.status === 200 ? r.body : r.text)),
    healthy.map((h) => h.body),
    'every other request of the same moment gets its key',
  );
  const { rows: state } = await k.kms.db.query(
    `SELECT (SELECT state FROM qkd_key WHERE key_id = $1) AS key, (SELECT set_aside FROM key_chunk WHERE first_seq = $2) AS chunk`,
    [damagedId, rows[0]!.first],
  );
  t.same(state[0], { key: 'DESTROYED', chunk: true }, 'the key destroyed, its chunk set aside');
  const again = await b.get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${damagedId}`);
  t.equal(again.status, 400, 'and it is never handed out');
});

t.test('a KME whose KEK does not open its material: a clear 503, and nothing set aside', async (t) => {
  await k.kms.close();
  const wrong = await startTestKms({ databaseUrl: k.db.url, fill: false, wrapper: createMockKeyWrapper({ kek: Buffer.alloc(32, 4) }) });
  t.teardown(() => wrong.close()); // also drops the database it made and did not use
  await wrong.kms.ingesters.get('KME_T-loopback')!.stop();
  const before = await wrong.kms.db.query('SELECT count(*)::int AS n FROM key_chunk WHERE set_aside');
  const res = await wrong.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(res.status, 503);
  t.notOk(etsiErrorProblem(res));
  t.match(res.body.message, /right HSM token and key/);
  const after = await wrong.kms.db.query('SELECT count(*)::int AS n FROM key_chunk WHERE set_aside');
  t.equal(after.rows[0].n, before.rows[0].n, 'no chunk was set aside');
});

import { randomBytes } from 'node:crypto';
import t from 'tap';
import { etsiErrorProblem, eventually } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// A malformed body must not come back: not in the answer, not in the KME's log, not in the audit log (refusal
// reasons go to all three). Over a real KME; each body carries a marker of its own, placed where V8's JSON.parse
// message would quote it.

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 } });
});
t.teardown(() => k.close());

// 10 characters: V8 quotes at most 10 characters from the fault on, so a longer marker would show only in part.
const marker = () => `Zq${randomBytes(4).toString('hex')}`;
const REASON = 'request body is not valid JSON';

t.test('a body that is not JSON is refused without quoting it anywhere', async (t) => {
  const bodies = [
    (m: string) => `{"number": ${m}}`, // V8: Unexpected token 'Z', ..."number": Zq…"... is not valid JSON
    (m: string) => m, // the whole body quoted
    (m: string) => `{"size": 256, "note": "${m}" 1}`, // V8 reports a position
    (m: string) => `{"note": "${m}`, // unterminated string
  ].map((make) => {
    const m = marker();
    return { m, body: make(m) };
  });
  const auditedBefore = await refusals();

  for (const { m, body } of bodies) {
    const res = await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', body);
    t.equal(res.status, 400, `${body}: 400`);
    t.equal(etsiErrorProblem(res), undefined, `${body}: an ETSI Error body`);
    t.equal(res.body?.message, REASON, `${body}: says what is wrong`);
    for (const d of res.body?.details ?? []) t.same(Object.keys(d), ['position'], `${body}: details hold at most a position`);
    t.notOk(res.text.includes(m), `${body}: the answer does not quote the body`);
  }

  // Refusals are audited off the request path: wait for ours before looking.
  const audited = await eventually(async () => ((await refusals()) >= auditedBefore + bodies.length ? true : undefined), 5_000);
  t.ok(audited, 'each refusal was audited');
  const logs = k.logs();
  t.match(logs, /request refused/, 'the refusals were logged');
  for (const { m } of bodies) {
    t.notOk(logs.includes(m), `marker ${m} is not in the log`);
    const { rows } = await k.kms.db.query('SELECT count(*)::int AS n FROM audit_event a WHERE a::text LIKE $1', [`%${m}%`]);
    t.equal(rows[0].n, 0, `marker ${m} is in no audit_event row`);
  }
});

t.test('valid JSON still works', async (t) => {
  const res = await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', { number: 1 });
  t.equal(res.status, 200, answered(res));
});

async function refusals(): Promise<number> {
  const { rows } = await k.kms.db.query(
    "SELECT count(*)::int AS n FROM audit_event WHERE outcome = 'refused' AND body LIKE $1",
    [`%${REASON}%`],
  );
  return rows[0].n;
}

import t from 'tap';
import { kekCommand } from '../../src/admin/kek-cli.js';
import { adminCli } from '../helpers/admin-cli.js';
import { eventually, sleep } from '../helpers/etsi.js';
import { hsmSkipReason, startTestKms, type TestHsm, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// Issue 13 item 5: KEK rotation without downtime, on hsm-mock and on a real SoftHSM2 token through PKCS#11. Load
// keeps running across the rotation and gets every answer; new material is sealed under the new version at once; the
// background re-wrap moves everything else (chunks, the custody log's ML-DSA seed); the old version is destroyed in
// the HSM only when nothing refers to it; keys made before the rotation still open to exactly what their master got.

for (const hsm of ['mock', 'softhsm'] as TestHsm[]) {
  const skip = hsmSkipReason(hsm);
  t.test(`rotation under load (${hsm})`, { skip: skip ? `SoftHSM2 is not installed here: ${skip}` : false }, async (t) => {
    const k: TestKms = await startTestKms({ hsm, keys: { max_key_count: 3000 }, rate: 20_000_000, kekGraceMs: 0 });
    t.teardown(() => k.close());
    const operator = k.client('OPERATOR_1');
    const before = await operator.get('/admin/v1/kek');
    t.equal(before.status, 200, answered(before));
    t.match(before.body, { current: 1, rewrap_pending: 0 });

    await k.kms.sealer.sealOnce(); // the custody log's ML-DSA key exists, its seed sealed under version 1
    // Keys made under version 1, waiting for their slave.
    const early = (await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', { number: 20 })).body.keys as Array<{ key_ID: string; key: string }>;
    t.equal(early.length, 20);

    let done = false;
    const answers: number[] = [];
    const load = Promise.all(
      ['SAE_C', 'SAE_D'].map(async (sae) => {
        const master = k.client(sae);
        const slave = k.client('SAE_A');
        while (!done) {
          const enc = await master.get('/api/v1/keys/SAE_A/enc_keys');
          answers.push(enc.status);
          if (enc.status !== 200) continue;
          const dec = await slave.get(`/api/v1/keys/${sae}/dec_keys?key_ID=${enc.body.keys[0].key_ID}`);
          answers.push(dec.status === 200 && dec.body.keys[0].key === enc.body.keys[0].key ? 200 : dec.status || -1);
        }
      }),
    );
    await sleep(300);
    const rotated = await operator.post('/admin/v1/kek/rotate', { reason: 'yearly rotation' });
    t.equal(rotated.status, 200, answered(rotated));
    t.equal(rotated.body.current, 2, 'version 2 in use at once');
    await sleep(700);
    done = true;
    await load;
    t.ok(answers.length > 10, `${answers.length} requests across the rotation`);
    t.same(answers.filter((s) => s !== 200 && s !== 503), [], 'every answer a key (or a 503 while the pool refills), every slave key equal to its master\'s');

    const newest = await eventually(async () => {
      const { rows } = await k.kms.db.query(`SELECT max(kek_version) AS v FROM key_chunk WHERE ingested_at > $1`, [new Date(Date.now() - 500)]);
      return rows[0].v === 2;
    }, 5_000);
    t.ok(newest, 'material ingested since is sealed under version 2');

    const finished = await eventually(async () => {
      const s = (await operator.get('/admin/v1/kek')).body;
      return s.rewrap_pending === 0 && s.versions.find((v: { version: number }) => v.version === 1)?.in_hsm === false ? s : undefined;
    }, 20_000, 100);
    t.ok(finished, 'the re-wrap moved everything and version 1 was destroyed in the HSM');
    t.match(finished, { current: 2, versions: [{ version: 1, in_hsm: false, chunks: 0, keys: 0, signing_keys: 0 }, { version: 2, in_hsm: true }] });
    const { rows: seals } = await k.kms.db.query(`SELECT kek_version FROM audit_signing_key_seal`);
    t.same(seals.map((r) => r.kek_version), [2], "the custody log's ML-DSA seed sealed again under version 2");

    const late = await k.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: early.map((e) => ({ key_ID: e.key_ID })) });
    t.equal(late.status, 200, answered(late));
    t.same(late.body.keys, early, 'keys made under version 1 open, after the re-wrap, to exactly what their master got');
    await k.kms.sealer.sealOnce();
    t.ok((await k.kms.db.query(`SELECT count(*)::int AS n FROM audit_seal`)).rows[0].n > 0, 'the custody log is still sealed and signed');

    const { rows: events } = await k.kms.db.query(`SELECT actor, body::jsonb -> 'detail' AS d FROM audit_event WHERE operation = 'kek' ORDER BY seq`);
    t.same(
      events.map((e) => [e.actor, e.d.change, e.d.version]),
      [
        ['operator:OPERATOR_1', 'rotate', 2],
        ['kme:KME_T', 'destroy', 1],
      ],
      'the rotation and the destruction are custody events',
    );
  });
}

t.test('kms kek status and rotate', async (t) => {
  const k = await startTestKms({ keys: { max_key_count: 100 } });
  t.teardown(() => k.close());
  const kek = adminCli(() => k, kekCommand);
  const status = await kek('status');
  t.equal(status.code, 0, status.err);
  t.match(status.out, /^VERSION\s+STATE\s+CHUNKS\s+RELAYED KEYS\s+SIGNING KEYS\s+CREATED\s+DESTROYED$/m);
  t.match(status.out, /^1\s+current\s+\d+\s+0\s+\d+\s+\d{4}-/m);
  const rotated = await kek('rotate', '--reason', 'test');
  t.equal(rotated.code, 0, rotated.err);
  t.match(rotated.out, /^rotated: new material is sealed under version 2$/m);
  t.match(rotated.out, /^1\s+old \(in the HSM\)\s/m, 'version 1 stays while the re-wrap (and the 60 s grace) run');
  const json = await kek('status', '--json');
  t.equal(JSON.parse(json.out).current, 2);
  const bad = await kek('rotate', 'now');
  t.equal(bad.code, 2);
  t.match(bad.err, /unexpected argument now/);
});

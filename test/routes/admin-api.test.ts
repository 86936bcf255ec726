import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { issueClientCert, loadIssued, writeIssued } from '../../src/pki/certificates.js';
import { changePrincipalStatus } from '../../src/store/principals.js';
import { EtsiClient, answered } from '../helpers/client.js';
import { etsiErrorProblem, eventually, sleep } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 items 1 and 2 (SAEs): the registry of principals and the admin API over real mutual TLS, on a real
// database. Only an operator's certificate gets in; an SAE enrolled there gets keys at once; a suspended or revoked
// SAE gets none from its next request on, on a keep-alive connection it already holds open too; every change is a
// custody event with the operator as its actor.

const dir = mkdtempSync(join(tmpdir(), 'kms-admin-api-'));
let k: TestKms;
const operator = () => k.client('OPERATOR_1');

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 200 } });
});
t.teardown(async () => {
  await k?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A client certificate of the KME's CA with this CN (a new SAE's, say). */
async function certificate(name: string, cn: string) {
  const ca = await loadIssued(join(k.pkiDir, 'ca.crt'), join(k.pkiDir, 'ca.key'));
  return writeIssued(dir, name, await issueClientCert(ca, { commonName: cn }));
}

t.test('only an operator certificate gets in: an SAE, an auditor, a KME, a stranger and no certificate get 401', async (t) => {
  const kme = new EtsiClient(k.kms.url, k.pki.ca, k.pki.kmes.KME_T);
  const anonymous = new EtsiClient(k.kms.url, k.pki.ca, {});
  t.teardown(() => (kme.close(), anonymous.close()));
  for (const [who, c] of [['SAE_A', k.client('SAE_A')], ['AUDITOR_1', k.client('AUDITOR_1')], ['KME_T', kme], ['SAE_X', k.client('SAE_X')], ['no certificate', anonymous]] as const) {
    const res = await c.get('/admin/v1/saes');
    t.equal(res.status, 401, who);
    t.equal(etsiErrorProblem(res), undefined, `${who}: an ETSI Error body`);
  }
  const list = await operator().get('/admin/v1/saes');
  t.equal(list.status, 200, answered(list));
  t.same(
    (list.body as { saes: Array<{ sae_id: string; status: string; source: string }> }).saes.map((s) => [s.sae_id, s.status, s.source]),
    ['SAE_A', 'SAE_B', 'SAE_C', 'SAE_D'].map((id) => [id, 'active', 'config']),
    'the SAEs of the config file, seeded into the registry',
  );
  const openapi = await operator().get('/admin/openapi.json');
  t.equal(openapi.status, 200, 'the admin contract is served');
});

t.test('an SAE enrolled by an operator gets keys at once; bad enrollments are refused with the reason', async (t) => {
  const files = await certificate('sae-new', 'encryptor-9.example');
  const enroll = await operator().post('/admin/v1/saes', { sae_id: 'SAE_N', certificate_cn: 'encryptor-9.example', tags: { site: 'zurich' } });
  t.equal(enroll.status, 200, answered(enroll));
  t.match(enroll.body, { sae_id: 'SAE_N', status: 'active', source: 'admin', tags: { site: 'zurich' } });
  const n = new EtsiClient(k.kms.url, k.pki.ca, files);
  t.teardown(() => n.close());
  const key = await n.get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(key.status, 200, answered(key, 'SAE_N gets a key'));
  const dec = await k.client('SAE_B').get(`/api/v1/keys/SAE_N/dec_keys?key_ID=${(key.body as { keys: Array<{ key_ID: string }> }).keys[0]!.key_ID}`);
  t.equal(dec.status, 200, 'and SAE_B fetches it from master SAE_N');

  const again = await operator().post('/admin/v1/saes', { sae_id: 'SAE_N' });
  t.equal(again.status, 409, 'an ID is enrolled once');
  t.match(again.body?.message, /exists already/);
  const sameCn = await operator().post('/admin/v1/saes', { sae_id: 'SAE_M', certificate_cn: 'SAE_A' });
  t.equal(sameCn.status, 409, "another principal's certificate name");
  t.match(sameCn.body?.message, /certificate CN SAE_A already names another principal/);
  const badId = await operator().post('/admin/v1/saes', { sae_id: 'SAE N/1' });
  t.equal(badId.status, 400, 'an SAE ID clients cannot put in a path');
  t.match(badId.body?.message, /sae_id/);
  const self = await operator().post('/admin/v1/saes', { sae_id: 'SAE_S', allowed_peers: ['SAE_S'] });
  t.equal(self.status, 400);
  t.match(self.body?.message, /allowed_peers/);
  const unknown = await operator().get('/admin/v1/saes/SAE_Q');
  t.equal(unknown.status, 404);
  t.match(unknown.body?.message, /no SAE SAE_Q/);
});

t.test('a suspended SAE gets no key from its next request on, on its open keep-alive connection too; resumed, it does again', async (t) => {
  const d = k.client('SAE_D');
  t.equal((await d.get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'SAE_D gets a key on its connection');
  const suspend = await operator().post('/admin/v1/saes/SAE_D/suspend', { reason: 'maintenance window' });
  t.equal(suspend.status, 200, answered(suspend));
  t.equal((suspend.body as { status: string }).status, 'suspended');
  const refused = await d.get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(refused.status, 401, 'refused on the same keep-alive connection, at once');
  t.match(refused.body?.message, /SAE SAE_D is suspended by an operator/);
  t.notOk(refused.body?.keys);
  const asSlave = await k.client('SAE_B').get('/api/v1/keys/SAE_D/enc_keys');
  t.equal(asSlave.status, 400, 'a master cannot get keys for a suspended slave');
  t.match(asSlave.body?.message, /slave SAE SAE_D is suspended/);
  const twice = await operator().post('/admin/v1/saes/SAE_D/suspend', {});
  t.equal(twice.status, 409, 'suspended already');
  const resume = await operator().post('/admin/v1/saes/SAE_D/resume', {});
  t.equal(resume.status, 200, answered(resume));
  t.equal((await d.get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'resumed: keys again, same connection');
});

t.test('a revocation is final; one made by another process reaches open connections within a second', async (t) => {
  const c = k.client('SAE_C');
  t.equal((await c.get('/api/v1/keys/SAE_B/status')).status, 200);
  // Another process (a replica, say) revokes SAE_C in the shared database: this KME learns it by polling.
  await changePrincipalStatus(k.kms.db, 'sae', 'SAE_C', 'revoke', { actor: 'operator:OPERATOR_2' }, 'key compromise suspected');
  const started = Date.now();
  const refused = await eventually(async () => (await c.get('/api/v1/keys/SAE_B/enc_keys')).status === 401, 1_000, 20);
  t.ok(refused && Date.now() - started <= 1_000, `refused ${Date.now() - started} ms after the revocation`);
  const resume = await operator().post('/admin/v1/saes/SAE_C/resume', {});
  t.equal(resume.status, 409, 'no way back from revoked');
  t.match(resume.body?.message, /revoked/);
  await t.rejects(k.kms.db.query(`UPDATE principal SET status = 'active' WHERE role = 'sae' AND id = 'SAE_C'`), /revocation is final/, 'the table refuses it too');
  await t.rejects(k.kms.db.query(`DELETE FROM principal WHERE role = 'sae' AND id = 'SAE_C'`), /cannot be deleted/);
  await sleep(600); // past a poll of the registry: nothing brings SAE_C back
  t.equal((await c.get('/api/v1/keys/SAE_B/status')).status, 401);
});

t.test('allowed peers: a pair that either side does not allow gets 401', async (t) => {
  const files = await certificate('sae-picky', 'SAE_P');
  const enroll = await operator().post('/admin/v1/saes', { sae_id: 'SAE_P', allowed_peers: ['SAE_B'] });
  t.equal(enroll.status, 200, answered(enroll));
  const p = new EtsiClient(k.kms.url, k.pki.ca, files);
  t.teardown(() => p.close());
  t.equal((await p.get('/api/v1/keys/SAE_B/enc_keys')).status, 200, 'with SAE_B: allowed');
  const other = await p.get('/api/v1/keys/SAE_A/enc_keys');
  t.equal(other.status, 401, 'with SAE_A: not allowed');
  t.match(other.body?.message, /SAE_P may not share keys with SAE_A/);
  const reverse = await k.client('SAE_A').get('/api/v1/keys/SAE_P/status');
  t.equal(reverse.status, 401, 'nor the other way round');
});

t.test('every change is a custody event with the operator as its actor, never a key', async (t) => {
  const { rows } = await k.kms.db.query<{ body: string }>(`SELECT body FROM audit_event WHERE operation = 'principal' ORDER BY seq`);
  const events = rows.map((r) => JSON.parse(r.body) as { actor: string; actor_cert?: string; detail: { change: string; id: string; reason?: string } });
  const of = (change: string, id: string) => events.find((e) => e.detail.change === change && e.detail.id === id);
  t.match(of('enroll', 'SAE_A'), { actor: 'kme:KME_T' }, 'seeding from the config, by the KME');
  t.match(of('enroll', 'SAE_N'), { actor: 'operator:OPERATOR_1', actor_cert: /^[0-9A-F:]+$/ });
  t.match(of('suspend', 'SAE_D'), { actor: 'operator:OPERATOR_1', detail: { reason: 'maintenance window' } });
  t.ok(of('resume', 'SAE_D'));
  t.match(of('revoke', 'SAE_C'), { actor: 'operator:OPERATOR_2', detail: { reason: 'key compromise suspected' } });
  t.notOk(events.some((e) => JSON.stringify(e).includes('"key":')), 'no key material');
});

import t from 'tap';
import type { Principal } from '../../src/auth/principals.js';
import type { Db } from '../../src/store/db.js';
import { changePrincipalStatus, enrollPrincipal, loadPrincipals, PrincipalChangeError, principalsStamp, seedPrincipals } from '../../src/store/principals.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';
import { capturingLogger } from '../helpers/logs.js';

// The registry of principals in PostgreSQL (migration 0007, src/store/principals.ts): seeding from the config file
// keeps what operators decided, every change is a custody event in its transaction, and the table itself refuses
// what must never happen (a revoked principal back, a row deleted, a CN or ID given to someone else).

let m: MigratedDatabase;
let db: Db;
const { log } = capturingLogger();
const kme = { actor: 'kme:KME_T' };
const ops = { actor: 'operator:alice', actorCert: 'AA:BB' };
const sae = (id: string, extra: Partial<Principal> = {}): Principal => ({ role: 'sae', id, certificateCn: id, status: 'active', tags: {}, source: 'config', ...extra });

t.before(async () => {
  m = await migratedDatabase({ poolSize: 4, log });
  db = m.db;
});
t.teardown(async () => {
  await m?.close();
});

const events = async () =>
  (await db.query<{ body: string }>(`SELECT body FROM audit_event WHERE operation = 'principal' ORDER BY seq`)).rows.map((r) => JSON.parse(r.body).detail);

t.test('seeding inserts, updates and unlists; it never undoes what an operator decided', async (t) => {
  await seedPrincipals(db, [sae('SAE_A'), sae('SAE_B'), sae('SAE_C')], kme);
  t.same((await events()).map((e) => [e.change, e.id]), [['enroll', 'SAE_A'], ['enroll', 'SAE_B'], ['enroll', 'SAE_C']]);
  const stamp = await principalsStamp(db);
  await seedPrincipals(db, [sae('SAE_A'), sae('SAE_B'), sae('SAE_C')], kme);
  t.equal(await principalsStamp(db), stamp, 'the same config changes nothing (and writes no event)');
  t.equal((await events()).length, 3);

  await changePrincipalStatus(db, 'sae', 'SAE_B', 'suspend', ops);
  await seedPrincipals(db, [sae('SAE_A', { certificateCn: 'encryptor-a', tags: { site: 'x' } }), sae('SAE_B')], kme);
  const after = new Map((await loadPrincipals(db)).map((p) => [p.id, p]));
  t.match(after.get('SAE_A'), { certificateCn: 'encryptor-a', tags: { site: 'x' }, status: 'active' }, 'changed in the file: updated');
  t.equal(after.get('SAE_B')!.status, 'suspended', 'suspended by an operator: stays suspended whatever the file says');
  t.equal(after.get('SAE_C')!.unlisted, true, 'no longer in the file: unlisted');
  t.not(await principalsStamp(db), stamp, 'the stamp moved');
  await seedPrincipals(db, [sae('SAE_A', { certificateCn: 'encryptor-a', tags: { site: 'x' } }), sae('SAE_B'), sae('SAE_C')], kme);
  t.notOk((await loadPrincipals(db)).find((p) => p.id === 'SAE_C')!.unlisted, 'listed again: admitted again');
  t.same((await events()).slice(3).map((e) => [e.change, e.id]), [['suspend', 'SAE_B'], ['update', 'SAE_A'], ['unlist', 'SAE_C'], ['update', 'SAE_C']]);
});

t.test('an SAE an operator enrolled cannot also come from the file; IDs and CNs are never reused', async (t) => {
  await enrollPrincipal(db, sae('SAE_N', { source: 'admin' }), ops);
  await t.rejects(seedPrincipals(db, [sae('SAE_N')], kme), /SAE_N is listed in the config file but was enrolled by an operator/);
  await changePrincipalStatus(db, 'sae', 'SAE_N', 'revoke', ops, 'retired');
  await t.rejects(enrollPrincipal(db, sae('SAE_N', { source: 'admin', certificateCn: 'fresh' }), ops), /SAE SAE_N exists already/);
  await t.rejects(enrollPrincipal(db, sae('SAE_Z', { source: 'admin', certificateCn: 'SAE_N' }), ops), /certificate CN SAE_N already names another principal/);
  const refused = await changePrincipalStatus(db, 'sae', 'SAE_N', 'resume', ops).catch((e: unknown) => e);
  t.ok(refused instanceof PrincipalChangeError && refused.kind === 'conflict', 'resuming a revoked SAE: a conflict');
  const missing = await changePrincipalStatus(db, 'sae', 'SAE_Q', 'suspend', ops).catch((e: unknown) => e);
  t.ok(missing instanceof PrincipalChangeError && missing.kind === 'not_found');
});

t.test('the table itself: revoked is final, rows are never deleted, role and ID never change', async (t) => {
  await t.rejects(db.query(`UPDATE principal SET status = 'active' WHERE id = 'SAE_N'`), /revocation is final/);
  await t.rejects(db.query(`DELETE FROM principal WHERE id = 'SAE_A'`), /cannot be deleted/);
  await t.rejects(db.query(`UPDATE principal SET id = 'SAE_AA' WHERE id = 'SAE_A'`), /role and ID never change/);
  await t.rejects(db.query(`INSERT INTO principal (role, id, certificate_cn, source) VALUES ('sae', 'bad id', 'x', 'admin')`), /principal_id_check/);
});

t.test('tags with several names are the same whatever order the file lists them in (jsonb reorders keys)', async (t) => {
  const tags = { site: 'geneva', classification: 'secret', tenant: 'bank-1' };
  await seedPrincipals(db, [sae('SAE_T', { tags })], kme);
  const stamp = await principalsStamp(db);
  await seedPrincipals(db, [sae('SAE_T', { tags })], kme);
  t.equal(await principalsStamp(db), stamp, 'seeding the same tags again changes nothing and writes no event');
});

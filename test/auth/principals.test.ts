import t from 'tap';
import { Principals, SERVER_AUTH_OID, type Principal } from '../../src/auth/principals.js';

// The registry's in-memory image (src/auth/principals.ts): which certificate is whom, in which role. Pure; the
// database side is test/store/principals.test.ts and the whole path over TLS test/routes/admin-api.test.ts.

const FP = 'AB'.repeat(32);
const colons = (fp: string) => fp.match(/../g)!.join(':');
const base = { status: 'active', tags: {}, source: 'config' } as const;
const everyone: Principal[] = [
  { ...base, role: 'sae', id: 'SAE_A', certificateCn: 'SAE_A' },
  { ...base, role: 'sae', id: 'SAE_P', certificateCn: 'encryptor-1', certificateSha256: FP },
  { ...base, role: 'sae', id: 'SAE_S', certificateCn: 'SAE_S', status: 'suspended' },
  { ...base, role: 'sae', id: 'SAE_R', certificateCn: 'SAE_R', status: 'revoked' },
  { ...base, role: 'sae', id: 'SAE_U', certificateCn: 'SAE_U', unlisted: true },
  { ...base, role: 'peer', id: 'KME_B', certificateCn: 'KME_B' },
  { ...base, role: 'auditor', id: 'AUDITOR_1', certificateCn: 'AUDITOR_1' },
  { ...base, role: 'operator', id: 'alice', certificateCn: 'alice.ops' },
];
const cert = (cn: string, extra: { sha256?: string; serverAuth?: boolean } = {}) => ({
  subjectCn: cn,
  sha256: colons(extra.sha256 ?? 'CD'.repeat(32)),
  extKeyUsage: extra.serverAuth ? [SERVER_AUTH_OID, '1.3.6.1.5.5.7.3.2'] : ['1.3.6.1.5.5.7.3.2'],
});

t.test('a certificate is one principal in one role', async (t) => {
  const p = new Principals(everyone);
  t.same(p.identify('sae', cert('SAE_A')), { id: 'SAE_A' });
  t.same(p.identify('operator', cert('alice.ops')), { id: 'alice' });
  t.same(p.identify('auditor', cert('AUDITOR_1')), { id: 'AUDITOR_1' });
  t.same(p.identify('peer', cert('KME_B', { serverAuth: true })), { id: 'KME_B' });
  t.match(p.identify('operator', cert('SAE_A')), { reason: /CN=SAE_A\) is not an operator of this KME/ }, "an SAE's certificate is no operator's");
  t.match(p.identify('sae', cert('alice.ops')), { reason: /is not registered as an SAE/ }, "an operator's is no SAE's");
  t.match(p.identify('sae', cert('nobody')), { reason: /CN=nobody\) is not registered as an SAE/ });
});

t.test("a pinned certificate, the kind of certificate each role needs, and the principal's status", async (t) => {
  const p = new Principals(everyone);
  t.same(p.identify('sae', cert('encryptor-1', { sha256: FP })), { id: 'SAE_P' }, 'the pinned one');
  t.match(p.identify('sae', cert('encryptor-1')), { reason: /not registered as an SAE of this KME: it is not the certificate pinned for SAE SAE_P/ });
  t.match(p.identify('peer', cert('KME_B')), { reason: /not a KME certificate \(no serverAuth usage\)/ }, 'a peer presents a KME certificate');
  t.match(p.identify('operator', cert('alice.ops', { serverAuth: true })), { reason: /is a KME certificate/ }, "a KME's never administers");
  t.match(p.identify('auditor', cert('AUDITOR_1', { serverAuth: true })), { reason: /is a KME certificate/ });
  t.match(p.identify('sae', cert('SAE_S')), { reason: 'SAE SAE_S is suspended by an operator' });
  t.match(p.identify('sae', cert('SAE_R')), { reason: 'SAE SAE_R is revoked by an operator' });
  t.match(p.identify('sae', cert('SAE_U')), { reason: /not registered as an SAE/ }, 'unlisted from the config: admitted nowhere');
  t.ok(p.isRegistered('sae', 'SAE_S') && p.isRegistered('sae', 'SAE_R'), 'suspended and revoked SAEs are still registered (routing names them)');
  t.notOk(p.isRegistered('sae', 'SAE_U'));
});

t.test('replace swaps the image and bumps the version; a conflicting image is refused and the old one kept', async (t) => {
  const p = new Principals(everyone);
  const v = p.version;
  p.replace(everyone.map((x) => (x.id === 'SAE_A' ? { ...x, status: 'suspended' as const } : x)));
  t.equal(p.version, v + 1);
  t.match(p.identify('sae', cert('SAE_A')), { reason: /suspended/ });
  t.throws(() => p.replace([...everyone, { ...base, role: 'auditor', id: 'AUDITOR_2', certificateCn: 'SAE_A' }]), /CN SAE_A is claimed by SAE SAE_A and auditor AUDITOR_2/);
  t.throws(() => p.replace([...everyone, { ...base, role: 'sae', id: 'SAE_A', certificateCn: 'other' }]), /SAE SAE_A is listed twice/);
  t.equal(p.version, v + 1, 'unchanged');
  t.match(p.identify('sae', cert('SAE_A')), { reason: /suspended/ }, 'the last good image stays');
});

// The checkpoint signing key (src/hsm/signing-key.ts) on both implementations: hsm-mock's software key, and a key
// pair on a real SoftHSM2 token through PKCS#11 (skipped, with the reason, where SoftHSM2 is not installed).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createMockSigningKey } from '../../hsm-mock/mock-signing-key.js';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { openPkcs11KeyWrapper } from '../../src/hsm/pkcs11.js';
import { openPkcs11SigningKey } from '../../src/hsm/pkcs11-signing-key.js';
import { ecdsaRawToDer } from '../../src/hsm/signing-key.js';
import { signingKeyConformance } from '../conformance/signing-key.js';

t.test('hsm-mock', (t) => signingKeyConformance(t, async () => createMockSigningKey()));

t.test('raw r||s becomes DER, with leading zeros trimmed and a zero added where the high bit is set', async (t) => {
  const r = Buffer.alloc(32, 0x80);
  const s = Buffer.concat([Buffer.alloc(2), Buffer.alloc(30, 0x11)]);
  const der = ecdsaRawToDer(Buffer.concat([r, s]));
  t.equal(der.toString('hex'), `3043022100${'80'.repeat(32)}021e${'11'.repeat(30)}`);
});

const dir = mkdtempSync(join(tmpdir(), 'kms-signing-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const token = createSoftHsmToken(dir, { label: 'kms-signing', pin: 'sign-pin-4711' });
if ('skip' in token) {
  t.comment(`SoftHSM2 tests skipped: ${token.skip}`);
  t.test('PKCS#11 signing key on SoftHSM2', { skip: token.skip }, () => {});
} else {
  const base = { module: token.module, tokenLabel: token.tokenLabel, pin: token.pin };

  t.test('PKCS#11 on SoftHSM2', (t) => signingKeyConformance(t, () => openPkcs11SigningKey({ ...base, label: 'custody', createIfMissing: true })));

  t.test('the key pair stays on the token: the same public key on every open, and none is made unless allowed', async (t) => {
    const a = await openPkcs11SigningKey({ ...base, label: 'custody', createIfMissing: true });
    const b = await openPkcs11SigningKey({ ...base, label: 'custody' });
    t.ok(a.publicKey.equals(b.publicKey), 'same key pair');
    await Promise.all([a.close(), b.close()]);
    await t.rejects(openPkcs11SigningKey({ ...base, label: 'absent' }), /no EC key pair .* labelled 'absent'.*create_key_if_missing/);
    await t.rejects(openPkcs11SigningKey({ ...base, pin: 'wrong-pin' , label: 'custody' }), /PIN rejected/);
  });

  t.test('beside the KEK wrapper on the same token: both work, and the wrapper goes on once the signer closed', async (t) => {
    const wrapper = await openPkcs11KeyWrapper({ ...base, keyLabel: 'kek', createIfMissing: true });
    const key = await openPkcs11SigningKey({ ...base, label: 'custody' });
    const sealed = await wrapper.encrypt(Buffer.from('material'), Buffer.from('aad'));
    t.ok((await key.sign(Buffer.from('x\n'))).length > 60, 'signs while the wrapper holds the login');
    await key.close();
    t.equal((await wrapper.decrypt(sealed, Buffer.from('aad'))).toString(), 'material', 'the wrapper still works once the signer closed');
    await wrapper.close();
  });
}

t.test('hsm-mock with a seed: the same key pair from the same seed, another from another', async (t) => {
  const seed = Buffer.alloc(32, 7);
  const [a, b, c] = [createMockSigningKey({ seed }), createMockSigningKey({ seed }), createMockSigningKey({ seed: Buffer.alloc(32, 8) })];
  t.ok(a.publicKey.equals(b.publicKey));
  t.notOk(a.publicKey.equals(c.publicKey));
  await signingKeyConformance(t, async () => createMockSigningKey({ seed }));
});

import { createPublicKey, verify } from 'node:crypto';
import type { Test } from 'tap';
import { HsmUnavailableError } from '../../src/hsm/key-wrapper.js';
import type { SigningKey } from '../../src/hsm/signing-key.js';

/**
 * The contract of SigningKey (src/hsm/signing-key.ts), run against every implementation: signatures verify with
 * node:crypto under the published public key (a P-256 SPKI), for that message only; concurrent calls all succeed;
 * after close, sign rejects with HsmUnavailableError.
 */
export async function signingKeyConformance(t: Test, open: () => Promise<SigningKey>): Promise<void> {
  const key = await open();
  const pub = createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' });
  t.equal(pub.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'the public key is a P-256 SPKI');
  const message = Buffer.from('qkms/KME_T/custody\n3\nAAAA\n');
  const sig = await key.sign(message);
  t.ok(verify('sha256', message, pub, sig), 'the DER signature verifies over SHA-256 of the message');
  t.notOk(verify('sha256', Buffer.from('another message\n'), pub, sig), 'and not for another message');
  const many = await Promise.all(Array.from({ length: 20 }, (_, i) => key.sign(Buffer.from(`note ${i}\n`))));
  t.ok(many.every((s, i) => verify('sha256', Buffer.from(`note ${i}\n`), pub, s)), '20 concurrent signatures all verify');
  t.ok(many.every((s) => s[0] === 0x30), 'every signature is a DER SEQUENCE');
  await key.close();
  await key.close();
  await t.rejects(key.sign(message), HsmUnavailableError, 'closed: HsmUnavailableError');
}

/**
 * Software SigningKey: an ECDSA P-256 key pair made with node:crypto in process memory, for the demo and machines
 * without SoftHSM. NOT an HSM: the private key is readable by anyone who can read the process, and a new one is made
 * on every start (auditors then pin one more verifier key; `kms audit keys` lists them all).
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { HsmUnavailableError } from '../src/hsm/key-wrapper.js';
import type { SigningKey } from '../src/hsm/signing-key.js';

export function createMockSigningKey(): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  let closed = false;
  return {
    description: 'hsm-mock: software ECDSA P-256 key in process memory — NOT an HSM',
    publicKey: publicKey.export({ format: 'der', type: 'spki' }),
    async sign(message: Buffer): Promise<Buffer> {
      if (closed) throw new HsmUnavailableError('hsm-mock: signing key is closed');
      return sign('sha256', message, privateKey);
    },
    async close(): Promise<void> {
      closed = true;
    },
  };
}

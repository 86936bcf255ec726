/**
 * Software SigningKey: an ECDSA P-256 key pair made with node:crypto in process memory, for the demo and machines
 * without SoftHSM. NOT an HSM: the private key is readable by anyone who can read the process. A new one is made on
 * every start (auditors then pin one more verifier key; `kms audit keys` lists them all), unless a seed is given: tests
 * that restart a KME on the same software KEK give that KEK, so the key survives the restart as a token's would.
 */
import { createECDH, createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, sign, type KeyObject } from 'node:crypto';
import { HsmUnavailableError } from '../src/hsm/key-wrapper.js';
import type { SigningKey } from '../src/hsm/signing-key.js';

export function createMockSigningKey(opts: { seed?: Buffer } = {}): SigningKey {
  const { publicKey, privateKey } = opts.seed ? keyPairFrom(opts.seed) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
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

/** A P-256 key pair derived from a seed (HKDF-SHA256; a scalar out of range is vanishingly unlikely and refused). */
function keyPairFrom(seed: Buffer): { publicKey: KeyObject; privateKey: KeyObject } {
  const d = Buffer.from(hkdfSync('sha256', seed, Buffer.alloc(0), 'hsm-mock checkpoint signing key', 32));
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const jwk = { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') };
  return {
    privateKey: createPrivateKey({ key: { ...jwk, d: d.toString('base64url') }, format: 'jwk' }),
    publicKey: createPublicKey({ key: jwk, format: 'jwk' }),
  };
}

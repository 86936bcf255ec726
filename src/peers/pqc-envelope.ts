import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import type { ml_kem768_x25519 as HybridKem } from '@noble/post-quantum/hybrid.js';

/**
 * Post-quantum envelopes for fallback keys (docs/operators.md, "When a link fails"): when a pair's QKD pool cannot
 * serve, the master's KME makes the keys and sends them to the slave's KME sealed to that KME's ML-KEM-768+X25519 key
 * (the X-Wing style hybrid of @noble/post-quantum: safe while either ML-KEM or X25519 holds), whatever TLS group the
 * KME-to-KME channel negotiated — so a recording of the channel opens neither today nor with a quantum computer later.
 *
 * One encapsulation per message; the shared secret goes through HKDF-SHA256 to an AES-256-GCM key that seals the
 * message's keys, concatenated, with the message's identity (who, for whom, which key_IDs and sizes, until when) as
 * associated data: an envelope moved to another message does not open.
 */

export const KEM_NAME = 'ML-KEM-768+X25519' as const;
/** ML-KEM-768's 1,184 bytes and X25519's 32. */
export const KEM_PUBLIC_KEY_BYTES = 1_216;

let kem: typeof HybridKem | undefined;

/**
 * Loads the KEM (about 8 MiB of resident memory: a KME that never falls back never pays it). Every function below
 * needs it loaded: await this first.
 */
export async function kemReady(): Promise<void> {
  kem ??= (await import('@noble/post-quantum/hybrid.js')).ml_kem768_x25519;
}

function loaded(): typeof HybridKem {
  if (!kem) throw new Error('the KEM is not loaded: await kemReady() first');
  return kem;
}

/** A KME's public KEM key, as its peers fetch it. `id`: the first 16 bytes of its SHA-256, hex. */
export interface KemPublicKey {
  id: string;
  publicKey: Uint8Array;
}

/** What travels: all base64 but the key id. */
export interface PqcEnvelope {
  kem_key_id: string;
  kem_ciphertext: string;
  iv: string;
  sealed: string;
}

const INFO = Buffer.from('qkms pqc fallback keys v1', 'utf8');

export const kemKeyId = (publicKey: Uint8Array) => createHash('sha256').update(publicKey).digest('hex').slice(0, 32);

/**
 * This KME's KEM key pair. Made on first use and held only in this process's memory, never stored: a restart makes a
 * new one (peers fetch the public key before each fallback batch), so a stolen database or HSM backup opens no
 * recorded fallback exchange.
 */
export class OwnKemKey {
  private pair: { public: KemPublicKey; secretKey: Uint8Array } | undefined;

  get public(): KemPublicKey {
    return this.keys().public;
  }

  /** Opens an envelope sealed to this key; throws when it was sealed to another key or does not authenticate. */
  open(envelope: PqcEnvelope, aad: Buffer): Buffer {
    const { public: own, secretKey } = this.keys();
    if (envelope.kem_key_id !== own.id) throw new Error(`sealed to KEM key ${envelope.kem_key_id}, not to this KME's current key ${own.id}`);
    const shared = loaded().decapsulate(Buffer.from(envelope.kem_ciphertext, 'base64'), secretKey);
    const key = aeadKey(shared);
    try {
      const sealed = Buffer.from(envelope.sealed, 'base64');
      if (sealed.length < 16) throw new Error('envelope too short');
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(envelope.iv, 'base64'));
      decipher.setAAD(aad);
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final()]);
    } catch {
      throw new Error('the envelope does not open: tampered with, or sealed for another message');
    } finally {
      key.fill(0);
      shared.fill(0);
    }
  }

  private keys() {
    if (!this.pair) {
      const { publicKey, secretKey } = loaded().keygen();
      this.pair = { public: { id: kemKeyId(publicKey), publicKey }, secretKey };
    }
    return this.pair;
  }
}

/** Seals `plaintext` to a peer's public KEM key, bound to `aad`. */
export function sealTo(to: KemPublicKey, plaintext: Buffer, aad: Buffer): PqcEnvelope {
  const { cipherText, sharedSecret } = loaded().encapsulate(to.publicKey);
  const key = aeadKey(sharedSecret);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  key.fill(0);
  sharedSecret.fill(0);
  return { kem_key_id: to.id, kem_ciphertext: Buffer.from(cipherText).toString('base64'), iv: iv.toString('base64'), sealed: sealed.toString('base64') };
}

function aeadKey(sharedSecret: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', sharedSecret, Buffer.alloc(0), INFO, 32));
}

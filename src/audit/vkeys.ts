import { createPublicKey, verify } from 'node:crypto';
import { ML_DSA_65, mlDsa65Signer, mlDsa65Verifier, type MlDsaKeyPair } from './ml-dsa-note.js';
import { ecdsaKeyIdOf, keyIdOf, NoteFormatError, SignatureType, type NoteSigner, type NoteVerifier } from './signed-note.js';

/**
 * Verifier keys ("vkeys") of the custody log, in the text form of the signed-note ecosystem:
 * `<key name>+<key ID in hex>+<base64(signature type || public key)>`. This is what an auditor pins: one line per key,
 * printed by `kms audit keys` and carried in every export bundle (where a verifier must not trust it blindly).
 *
 * The log's two kinds of key: ECDSA P-256 (type 0x02: public key as DER SubjectPublicKeyInfo, DER signature over
 * SHA-256 of the note text; held in the HSM) and ML-DSA-65 (type 0xff "ml-dsa-65", src/audit/ml-dsa-note.ts).
 */
export type LogKeyAlgorithm = 'ecdsa-p256' | 'ml-dsa-65';

/** A signer that knows its own verifier key. */
export interface LogSigner extends NoteSigner {
  algorithm: LogKeyAlgorithm;
  vkey: string;
}

export function vkeyOf(name: string, keyId: Buffer, type: Buffer, publicKey: Buffer): string {
  return `${name}+${keyId.toString('hex')}+${Buffer.concat([type, publicKey]).toString('base64')}`;
}

/** An ECDSA P-256 signer over `sign`, which signs a message with SHA-256 and returns a DER signature. */
export function ecdsaLogSigner(name: string, spki: Buffer, sign: (message: Buffer) => Promise<Buffer>): LogSigner {
  const keyId = ecdsaKeyIdOf(spki);
  return { name, keyId, sign, algorithm: 'ecdsa-p256', vkey: vkeyOf(name, keyId, SignatureType.ecdsa, spki) };
}

/** Reads one verifier key; throws NoteFormatError naming what is wrong. */
export function parseVkey(vkey: string): NoteVerifier & { algorithm: LogKeyAlgorithm; vkey: string } {
  const m = /^([^\s+]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+={0,2})$/.exec(vkey.trim());
  if (!m) throw new NoteFormatError(`not a verifier key (name+keyid+base64): "${vkey.trim().slice(0, 40)}"`);
  const [name, idHex, b64] = [m[1]!, m[2]!, m[3]!];
  const raw = Buffer.from(b64, 'base64');
  const keyId = Buffer.from(idHex, 'hex');
  if (raw[0] === SignatureType.ecdsa[0]) {
    const spki = raw.subarray(1);
    let key;
    try {
      key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    } catch {
      throw new NoteFormatError(`verifier key of ${name}: not an ECDSA public key`);
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new NoteFormatError(`verifier key of ${name}: not a P-256 key`);
    }
    if (!ecdsaKeyIdOf(spki).equals(keyId)) throw new NoteFormatError(`verifier key of ${name}: the key ID does not match the key`);
    return { name, keyId, algorithm: 'ecdsa-p256', vkey: vkey.trim(), verify: (msg, sig) => safely(() => verify('sha256', msg, key, sig)) };
  }
  if (raw.subarray(0, ML_DSA_65.length).equals(ML_DSA_65)) {
    const publicKey = raw.subarray(ML_DSA_65.length);
    if (!keyIdOf(name, ML_DSA_65, publicKey).equals(keyId)) throw new NoteFormatError(`verifier key of ${name}: the key ID does not match the key`);
    return { ...mlDsa65Verifier(name, publicKey), algorithm: 'ml-dsa-65', vkey: vkey.trim() };
  }
  throw new NoteFormatError(`verifier key of ${name}: signature type 0x${raw[0]?.toString(16) ?? '??'} is not one this log uses`);
}

function safely(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false; // a malformed signature is a signature that does not verify
  }
}

/**
 * The post-quantum signer of the log (src/audit/ml-dsa-note.ts) with its verifier key; `sign` replaces the in-thread
 * signature (the KME signs on a thread of its own: src/audit/ml-dsa-thread.ts).
 */
export function mlDsaLogSigner(name: string, keys: MlDsaKeyPair, sign?: (message: Buffer) => Promise<Buffer>): LogSigner {
  const signer = mlDsa65Signer(name, keys);
  return { ...signer, ...(sign ? { sign } : {}), algorithm: 'ml-dsa-65', vkey: vkeyOf(name, signer.keyId, ML_DSA_65, Buffer.from(keys.publicKey)) };
}

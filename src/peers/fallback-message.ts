import canonicalize from 'canonicalize';
import type { ExtKeys } from '../schemas/peer.js';
import { sealTo, type KemPublicKey, type OwnKemKey } from './pqc-envelope.js';

/**
 * The `ext_keys` message that carries fallback keys to the slave's KME (docs/network.md): the usual reservation, with
 * no positions, and the keys themselves sealed to the receiver's KEM key (src/peers/pqc-envelope.ts), bound to the
 * rest of the message.
 */

/** The message's identity, as associated data of its envelope: everything but the envelope, canonical JSON. */
function fallbackAad(message: ExtKeys): Buffer {
  const { qkms_pqc: _, ...identity } = message;
  return Buffer.from(canonicalize(identity)!, 'utf8');
}

/** A reservation of fallback keys for `to`, the next KME (direct: fallback keys are never relayed on). */
export function fallbackMessage(
  m: Omit<ExtKeys, 'keys' | 'qkms_pqc'> & { keyIds: string[]; sizeBits: number },
  keys: Buffer[],
  to: KemPublicKey,
): ExtKeys {
  const { keyIds, sizeBits, ...rest } = m;
  const message: ExtKeys = { ...rest, keys: keyIds.map((key_id) => ({ key_id, qkms_size: sizeBits })) };
  const all = Buffer.concat(keys);
  message.qkms_pqc = sealTo(to, all, fallbackAad(message));
  all.fill(0);
  return message;
}

/** The keys of a fallback message, one buffer each (the caller wipes them); throws when the envelope does not open. */
export function openFallbackKeys(kem: OwnKemKey, message: ExtKeys): Buffer[] {
  const all = kem.open(message.qkms_pqc!, fallbackAad(message));
  try {
    const total = message.keys.reduce((n, k) => n + k.qkms_size / 8, 0);
    if (all.length !== total) throw new Error(`the envelope holds ${all.length} bytes, the keys named ${total}`);
    let at = 0;
    return message.keys.map((k) => Buffer.from(all.subarray(at, (at += k.qkms_size / 8))));
  } finally {
    all.fill(0);
  }
}

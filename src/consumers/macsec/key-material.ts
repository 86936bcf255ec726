import type { ConsumerKey } from '../connector.js';

/**
 * How MACsec names a QKD key. The ETSI key_ID is a UUID both agents know; its 16 bytes become the MKA CKN and the
 * static SAK's key identifier, so either end (and an operator reading `ip macsec show`) can tell which QKD key a
 * connectivity association or SA uses without seeing the key.
 */
export function keyIdBytesHex(keyId: string): string {
  const hex = keyId.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex) || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(keyId)) {
    throw new Error(`key_ID ${JSON.stringify(keyId)} is not a UUID: MACsec needs its 16 bytes as the key name`);
  }
  return hex;
}

/**
 * The key as hex for the encryptor, after checking its length against the binding. The error names the lengths,
 * never the bytes: a pool handing out 32-byte keys to a 16-byte binding is a configuration mistake to fix, not to
 * paper over by truncating (a truncated key would no longer match what the peer's KME delivers).
 */
export function keyHexOfLength(key: ConsumerKey, bytes: 16 | 32, field: string): string {
  if (key.key.length !== bytes) {
    throw new Error(`key ${key.keyId} has ${key.key.length} bytes but ${field} says ${bytes}: ask the KME for ${bytes * 8}-bit keys (enc_keys size) or change ${field}`);
  }
  return key.key.toString('hex');
}

/** Hex runs as long as a key or key id are cut out of text that came back from a tool (ip echoes bad arguments). */
export function scrubHex(text: string): string {
  return text.replace(/[0-9a-fA-F]{32,}/g, '[hex removed]').trim();
}

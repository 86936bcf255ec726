import type { KeyContainer } from './types.js';

/**
 * Where a key's material came from: `qkd`, the link's QKD material; `pqc_fallback`, made by the master's KME and sent
 * to the slave's KME encapsulated with ML-KEM-768+X25519, because the pair's QKD pool could not serve and its policy
 * allows it (docs/operators.md, "When a link fails").
 */
export type KeyOrigin = 'qkd' | 'pqc_fallback';

/**
 * The answer's keys, marked with their origin: `key_container_extension.qkms_key_origin` says it for all of them (a
 * Get key answer is always of one origin); a Get key with key IDs answer whose keys differ says `mixed` there and
 * marks each key in its `key_extension`.
 */
export function markOrigin(keys: Array<{ key_ID: string; key: string }>, originOf: (keyId: string) => KeyOrigin): KeyContainer {
  const origins = keys.map((k) => originOf(k.key_ID));
  const first = origins[0] ?? 'qkd';
  if (origins.every((o) => o === first)) return { keys, key_container_extension: { qkms_key_origin: first } };
  return {
    keys: keys.map((k, i) => ({ ...k, key_extension: { qkms_key_origin: origins[i]! } })),
    key_container_extension: { qkms_key_origin: 'mixed' },
  };
}

/** SKIP keyId ↔ ETSI key_ID: the same 16 bytes, as 32 hex digits or as a UUID. */
export function skipKeyIdOf(etsiKeyId: string): string {
  return etsiKeyId.replace(/-/g, '').toLowerCase();
}

/** The ETSI key_ID of a SKIP keyId, or undefined when it is not 32 hex digits. */
export function etsiKeyIdOf(skipKeyId: string): string | undefined {
  const h = skipKeyId.toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(h)) return undefined;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

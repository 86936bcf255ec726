/**
 * A signing key that never leaves whatever holds the KME's key-encryption key: the key that signs the custody log's
 * checkpoints (ECDSA P-256 with SHA-256).
 *
 * Implementations: `src/hsm/pkcs11-signing-key.ts` (a key pair on the PKCS#11 token) and `hsm-mock/` (software, for
 * the demo). Both pass `test/conformance/signing-key.ts`.
 */
export interface SigningKey {
  /** Human-readable, for the start-up log. Never a secret. */
  readonly description: string;
  /** The public key as DER SubjectPublicKeyInfo (what auditors pin, inside the log's verifier key). */
  readonly publicKey: Buffer;
  /**
   * ECDSA P-256 over SHA-256 of `message`; the signature DER-encoded (ASN.1 SEQUENCE of r and s), as node:crypto
   * verifies by default. Safe to call concurrently; bounded like the KeyWrapper's calls (throws HsmUnavailableError
   * when the HSM cannot be reached or does not answer in time).
   */
  sign(message: Buffer): Promise<Buffer>;
  /** Releases sessions and threads. Idempotent; `sign` rejects with HsmUnavailableError afterwards. */
  close(): Promise<void>;
}

/** PKCS#11 CKM_ECDSA answers r ‖ s (each as long as the curve's order); X.509 and node:crypto want DER. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const integer = (bytes: Buffer): Buffer => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const trimmed = bytes.subarray(i);
    const body = trimmed[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed; // stay positive
    return Buffer.concat([Buffer.from([0x02, body.length]), body]);
  };
  const seq = Buffer.concat([integer(raw.subarray(0, half)), integer(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30, seq.length]), seq]); // under 128 bytes for P-256: short-form lengths
}

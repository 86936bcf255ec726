/**
 * The one interface between the KME and whatever holds its key-encryption key (KEK).
 *
 * Implementations: `src/hsm/pkcs11.ts` (a real HSM through PKCS#11) and `hsm-mock/` (software, for the demo and
 * for machines without an HSM). Both pass `test/conformance/key-wrapper.ts`; a new implementation must too.
 *
 * The wrapper is an AEAD oracle: AES-256-GCM under a KEK that never leaves it. It knows nothing of key_IDs,
 * links or envelopes — `src/barrier/` builds the associated data and the stored format on top of it.
 */
export interface KeyWrapper {
  /** Human-readable description for the start-up log, e.g. "PKCS#11 token 'kms' (SoftHSM)". Never a secret. */
  readonly description: string;

  /** True only for implementations backed by real hardware or a real PKCS#11 module. hsm-mock says false. */
  readonly isHardware: boolean;

  /**
   * The KEK version new ciphertexts are made under. Versions are positive integers; a higher one is newer.
   * Older versions stay usable for `decrypt` until a re-wrap has moved every row off them (a later issue).
   */
  currentVersion(): number;

  /**
   * Encrypts `plaintext` under the current KEK with a fresh random 96-bit IV, binding `aad`.
   * Reads `plaintext` and `aad` before it returns its promise: callers wipe them as soon as the call is made.
   * Safe to call concurrently. Bounded: an HSM that stops answering costs a call at most the implementation's
   * deadline (the PKCS#11 wrapper's `timeoutMs`, unless set to 0), never a wait for the HSM. Throws
   * `HsmUnavailableError` when the HSM cannot be reached, fails, or does not answer in time (the caller answers 503
   * and retries later; the implementation reconnects by itself on a later call).
   */
  encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed>;

  /**
   * Decrypts what `encrypt` produced. Throws `IntegrityError` when the tag does not verify (wrong aad, altered
   * ciphertext, wrong version), and `HsmUnavailableError` when the HSM cannot be reached, fails or does not answer
   * in time. Never returns partial data. Safe to call concurrently; bounded like `encrypt`.
   *
   * `IntegrityError` means the ciphertext is at fault, never the HSM: callers set the material aside or destroy it
   * as compromised, so an HSM fault reported as one would discard good keys and never heal. Where the answer is
   * ambiguous (SoftHSM reports a bad tag with CKR_GENERAL_ERROR, which modules also use for internal faults) the
   * implementation must rule out a fault before it says `IntegrityError`: the PKCS#11 wrapper retries on a fresh
   * session and then self-tests the KEK, and answers `HsmUnavailableError` if that self-test fails.
   */
  decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer>;

  /**
   * Releases sessions and handles. Idempotent. After close, encrypt/decrypt reject with `HsmUnavailableError`
   * (a request racing shutdown gets a 503, not a 500).
   */
  close(): Promise<void>;
}

/** An AES-GCM result. `ciphertext` carries the 16-byte tag at its end (as PKCS#11 CKM_AES_GCM returns it). */
export interface Sealed {
  kekVersion: number;
  iv: Buffer; // 12 bytes
  ciphertext: Buffer; // plaintext length + 16
}

/** The HSM (or its session) is unreachable or refused to work; transient from the caller's point of view. */
export class HsmUnavailableError extends Error {
  override name = 'HsmUnavailableError';
}

/** A ciphertext failed authentication: tampered, moved to another identity, or unknown KEK version. */
export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

/**
 * Optional capability (DESIGN §3.4) of the HSM behind a KeyWrapper: the KEK versions an operator adds and destroys
 * (src/lifecycle/kek-rotation.ts). Both implementations have it; `kekVersionsOf` says whether a wrapper does.
 */
export interface KekVersions {
  /** The versions the HSM holds, ascending. */
  listVersions(): Promise<number[]>;
  /**
   * Creates version `n` (higher than every version held) in the HSM. A wrapper already open may not use it before it
   * is opened again (`needsReopen`); the caller then opens a fresh one.
   */
  createVersion(n: number): Promise<void>;
  /** Destroys version `n` in the HSM, for good: what it sealed never opens again. Refuses the highest version. */
  destroyVersion(n: number): Promise<void>;
  /** True when a wrapper must be opened again to use a version created since it opened (PKCS#11: its sessions). */
  readonly needsReopen: boolean;
}

export function kekVersionsOf(w: KeyWrapper): (KeyWrapper & KekVersions) | undefined {
  return 'listVersions' in w && 'createVersion' in w ? (w as KeyWrapper & KekVersions) : undefined;
}

/**
 * Software KeyWrapper: AES-256-GCM with node:crypto under a KEK held in process memory.
 *
 * This is NOT an HSM. Anyone who can read the process memory (a core dump, a debugger, swap) gets the KEK, and a
 * random KEK dies with the process, so what it wrapped can never be unwrapped again. It exists for the demo and for
 * machines without SoftHSM; it passes the same conformance suite as the PKCS#11 wrapper so callers cannot tell.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { HsmUnavailableError, IntegrityError, type KekVersions, type KeyWrapper, type Sealed } from '../src/hsm/key-wrapper.js';

/**
 * The mock plus a test-only switch that makes it behave like an unreachable HSM (to exercise 503 paths). Its KEK
 * versions live in process memory too: a version it creates is random, and in use at once.
 */
export interface MockKeyWrapper extends KeyWrapper, KekVersions {
  /** While down, encrypt/decrypt reject with HsmUnavailableError; `false` brings it back. Test-only. */
  simulateOutage(down: boolean): void;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
export const MOCK_DESCRIPTION = 'hsm-mock: software KEK in process memory — NOT an HSM, for demos and tests only';

export function createMockKeyWrapper(opts: { kek?: Buffer; log?: Logger } = {}): MockKeyWrapper {
  if (opts.kek !== undefined && opts.kek.length !== 32) throw new Error('hsm-mock: kek must be 32 bytes (AES-256)');
  // Our own copy, so that close() can zero it without touching the caller's buffer.
  const keks = new Map<number, Buffer>([[1, opts.kek ? Buffer.from(opts.kek) : randomBytes(32)]]);
  const current = () => Math.max(...keks.keys());
  let closed = false;
  let down = false;
  opts.log?.warn({ kekVersion: 1, givenKek: opts.kek !== undefined }, MOCK_DESCRIPTION);

  function usable(): void {
    if (closed) throw new HsmUnavailableError('hsm-mock: key wrapper is closed');
    if (down) throw new HsmUnavailableError('hsm-mock: simulated HSM outage');
  }

  return {
    description: MOCK_DESCRIPTION,
    isHardware: false,
    currentVersion: current,
    needsReopen: false,
    async listVersions(): Promise<number[]> {
      return [...keks.keys()].sort((a, b) => a - b);
    },
    async createVersion(n: number): Promise<void> {
      usable();
      if (n <= current()) throw new Error(`hsm-mock: KEK version ${n} is not above the current ${current()}`);
      keks.set(n, randomBytes(32));
    },
    async destroyVersion(n: number): Promise<void> {
      usable();
      if (n === current()) throw new Error(`hsm-mock: KEK version ${n} is the current one`);
      keks.get(n)?.fill(0);
      keks.delete(n);
    },
    simulateOutage(value: boolean): void {
      down = value;
    },
    async encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> {
      usable();
      const iv = randomBytes(IV_BYTES);
      const kekVersion = current();
      const cipher = createCipheriv('aes-256-gcm', keks.get(kekVersion)!, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad);
      const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
      return { kekVersion, iv, ciphertext };
    },
    async decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
      usable();
      const kek = keks.get(sealed.kekVersion);
      if (!kek) throw new IntegrityError(`hsm-mock: unknown KEK version ${sealed.kekVersion}`);
      // GCM in OpenSSL accepts any IV length, so enforce the 96-bit one ourselves, as an HSM would.
      if (sealed.iv.length !== IV_BYTES || sealed.ciphertext.length < TAG_BYTES) {
        throw new IntegrityError('hsm-mock: malformed sealed value');
      }
      const body = sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', kek, sealed.iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(aad);
      decipher.setAuthTag(sealed.ciphertext.subarray(body.length));
      const out = decipher.update(body);
      try {
        return Buffer.concat([out, decipher.final()]);
      } catch {
        out.fill(0); // unauthenticated plaintext never leaves this function
        throw new IntegrityError('hsm-mock: ciphertext failed authentication');
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const kek of keks.values()) kek.fill(0);
    },
  };
}

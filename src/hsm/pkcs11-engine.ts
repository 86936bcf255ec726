/**
 * The PKCS#11 work of one thread: one session at a time, reopened when lost, AES-GCM encrypt and decrypt on it,
 * and the rule that tells a bad tag from a device fault. Synchronous: the worker thread runs it for a batch of
 * calls back to back (src/hsm/pkcs11-worker.ts); with `timeoutMs: 0` the main thread runs it per call.
 *
 * Not safe for concurrent use (a session runs one operation at a time); its owner serializes the calls.
 */
import { randomFillSync } from 'node:crypto';
import { HsmUnavailableError, IntegrityError } from './key-wrapper.js';
import { code, K, openSession, why, type ModuleHandle, type Session, type Target } from './pkcs11-module.js';

export const IV_BYTES = 12;
export const TAG_BYTES = 16;
export const RETRY_MS = 1000; // after a failed reopen, fail fast for a while instead of blocking every call on a dead HSM
// What the self-test encrypts and decrypts again; any fixed value would do.
const SELF_TEST = Buffer.from('qkms PKCS#11 KEK self-test value');
const SELF_TEST_AAD = Buffer.from('qkms self-test');
// The session (or the whole token/library) is gone: reopen on the next call, without closing the dead handle, since
// some modules reuse handle numbers (SoftHSM 2.6 does not) and it might by now name another thread's session.
const SESSION_GONE = new Set([K.CKR_SESSION_HANDLE_INVALID, K.CKR_SESSION_CLOSED, K.CKR_DEVICE_REMOVED,
  K.CKR_TOKEN_NOT_PRESENT, K.CKR_CRYPTOKI_NOT_INITIALIZED]);
// Modules that report a bad GCM tag with a specific code. SoftHSM says CKR_GENERAL_ERROR, which is also what any
// module says for an internal fault: decrypt() tells those two apart.
const INTEGRITY = new Set([K.CKR_ENCRYPTED_DATA_INVALID, K.CKR_ENCRYPTED_DATA_LEN_RANGE]);
// SoftHSM answers CKR_ARGUMENTS_BAD to a NULL data pointer, which a fresh empty Buffer may have; a zero-length view
// into a real allocation always has a valid pointer.
const EMPTY = Buffer.alloc(1).subarray(0, 0);
const nonEmpty = (b: Buffer): Buffer => (b.length === 0 ? EMPTY : b);
const gcm = (iv: Buffer, aad: Buffer) => ({ mechanism: K.CKM_AES_GCM,
  parameter: { type: K.CK_PARAMS_AES_GCM, iv, aad: nonEmpty(aad), ivBits: IV_BYTES * 8, tagBits: TAG_BYTES * 8 } });

/**
 * IVs come from a pool of CSPRNG output, one 12-byte slice each, never reused: GCM needs an IV that never repeats
 * under a key, and one randomFillSync per call costs ~5 µs here, a fifth of the call. Not secret (it is stored
 * beside the ciphertext), so the pool needs no wiping.
 */
class IvPool {
  private readonly pool = Buffer.alloc(IV_BYTES * 512);
  private next = this.pool.length;

  fill(iv: Buffer): void {
    if (this.next === this.pool.length) {
      randomFillSync(this.pool);
      this.next = 0;
    }
    this.pool.copy(iv, 0, this.next, this.next + IV_BYTES);
    this.next += IV_BYTES;
  }
}

export type Log = (level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string) => void;

export class Engine {
  current = 0;
  private session: Session | undefined;
  private retryAt = 0;
  private healing = false;
  private readonly token: string;
  private readonly ivs = new IvPool();

  /** `stamp` runs before every PKCS#11 call: the worker's owner reads it to see how long the current call has run. */
  constructor(
    private readonly m: ModuleHandle,
    private readonly t: Target,
    private readonly log: Log,
    private readonly stamp = () => {},
  ) {
    this.token = `token '${t.tokenLabel}'`;
  }

  /** The first session, at start-up: its errors are configuration errors, thrown as they are. */
  open(mayCreate: boolean): Session {
    return this.m.call(() => this.opened(mayCreate));
  }

  private opened(mayCreate: boolean): Session {
    this.stamp();
    this.session = openSession(this.m, this.t, mayCreate, (key) =>
      this.log('warn', { token: this.t.tokenLabel, key }, 'no KEK found on the token: generated a new one'));
    this.current = this.session.current;
    return this.session;
  }

  /** Encrypts `plaintext` under the current KEK into `out` (plaintext + 16 bytes), with a fresh IV written to `iv`. */
  encrypt(plaintext: Buffer, aad: Buffer, iv: Buffer, out: Buffer): number {
    return this.m.call(() => this.encrypted(plaintext, aad, iv, out));
  }

  private encrypted(plaintext: Buffer, aad: Buffer, iv: Buffer, out: Buffer): number {
    const s = this.take();
    this.ivs.fill(iv);
    try {
      this.stamp();
      this.m.p11.C_EncryptInit(s.handle, gcm(iv, aad), s.keys.get(s.current)!);
      this.stamp();
      this.m.p11.C_Encrypt(s.handle, nonEmpty(plaintext), out);
      return s.current;
    } catch (e) {
      throw this.drop('encrypt', e);
    }
  }

  /**
   * Decrypts into `out` (as long as the ciphertext: SoftHSM wants room for the tag) and returns the plaintext
   * length; `out` is wiped on failure. CKR_GENERAL_ERROR is SoftHSM's answer to a bad tag and any module's answer to
   * an internal fault. A fault of the session heals on a fresh one; if the retry fails too and the KEK still passes a
   * self-test there, the ciphertext is at fault (IntegrityError). Otherwise the HSM is (HsmUnavailableError), and the
   * session is dropped so that later calls reopen.
   */
  decrypt(version: number, iv: Buffer, ciphertext: Buffer, aad: Buffer, out: Buffer): number {
    return this.m.call(() => this.decrypted(version, iv, ciphertext, aad, out));
  }

  private decrypted(version: number, iv: Buffer, ciphertext: Buffer, aad: Buffer, out: Buffer): number {
    const first = this.decryptOnce(version, iv, ciphertext, aad, out);
    if (first !== 'general') return first;
    this.log('warn', { token: this.t.tokenLabel }, 'CKR_GENERAL_ERROR on decrypt; retrying on a fresh session');
    this.closeSession();
    const second = this.decryptOnce(version, iv, ciphertext, aad, out);
    if (second !== 'general') return second;
    this.selfTest(version);
    throw new IntegrityError('ciphertext failed authentication (CKR_GENERAL_ERROR twice; the KEK passed its self-test)');
  }

  /** Logs out (when told: it ends the login of every session of the process on the token) and closes the session. */
  close(logout: boolean): void {
    this.m.call(() => {
      const s = this.session;
      if (s && logout) try { this.stamp(); this.m.p11.C_Logout(s.handle); } catch { /* not logged in any more */ }
      this.closeSession();
    });
  }

  /** One decrypt; 'general' for CKR_GENERAL_ERROR (the session is kept for the caller to decide). */
  private decryptOnce(version: number, iv: Buffer, ciphertext: Buffer, aad: Buffer, out: Buffer): number | 'general' {
    const s = this.take();
    const key = s.keys.get(version);
    if (!key) throw new IntegrityError(`unknown KEK version ${version} on ${this.token}`);
    try {
      this.stamp();
      this.m.p11.C_DecryptInit(s.handle, gcm(iv, aad), key);
      this.stamp();
      return this.m.p11.C_Decrypt(s.handle, ciphertext, out).length;
    } catch (e) {
      out.fill(0); // unauthenticated plaintext never leaves
      if (code(e) === K.CKR_GENERAL_ERROR) return 'general';
      if (INTEGRITY.has(code(e))) throw new IntegrityError(`ciphertext failed authentication (${why(e)})`);
      throw this.drop('decrypt', e);
    }
  }

  /** Known-answer self-test of a KEK: encrypt a fixed value and decrypt it back. Throws HsmUnavailableError when it fails. */
  private selfTest(version: number): void {
    const s = this.take();
    try {
      const iv = Buffer.alloc(IV_BYTES);
      const sealed = Buffer.alloc(SELF_TEST.length + TAG_BYTES);
      this.ivs.fill(iv);
      this.stamp();
      this.m.p11.C_EncryptInit(s.handle, gcm(iv, SELF_TEST_AAD), s.keys.get(version)!);
      this.stamp();
      this.m.p11.C_Encrypt(s.handle, SELF_TEST, sealed);
      this.stamp();
      this.m.p11.C_DecryptInit(s.handle, gcm(iv, SELF_TEST_AAD), s.keys.get(version)!);
      this.stamp();
      const back = this.m.p11.C_Decrypt(s.handle, sealed, Buffer.alloc(sealed.length));
      if (!back.equals(SELF_TEST)) throw new Error('the self-test value decrypted to something else');
    } catch (e) {
      throw this.drop('self-test', e);
    }
  }

  /** The session, reopened if it was dropped; fails fast for RETRY_MS after a failed reopen. */
  private take(): Session {
    if (this.session) return this.session;
    if (Date.now() < this.retryAt) throw new HsmUnavailableError(`PKCS#11 ${this.token} unavailable; reconnect pending`);
    try {
      this.opened(false);
      if (this.healing) this.log('info', { token: this.t.tokenLabel, kekVersion: this.current }, 'PKCS#11 session reopened');
      this.healing = false;
      return this.session!;
    } catch (e) {
      this.retryAt = Date.now() + RETRY_MS;
      this.log('warn', { token: this.t.tokenLabel, err: why(e) }, 'PKCS#11 session reopen failed');
      throw new HsmUnavailableError(`cannot reopen a PKCS#11 session on ${this.token}: ${why(e)}`);
    }
  }

  /** A failed call: the session may be dead or mid-operation, so it goes, and the next call opens a fresh one. */
  private drop(op: string, e: unknown): HsmUnavailableError {
    if (e instanceof HsmUnavailableError) return e; // from take(): there is no session to drop
    if (SESSION_GONE.has(code(e))) this.session = undefined; else this.closeSession();
    this.healing = true;
    this.log('warn', { token: this.t.tokenLabel, op, err: why(e) }, 'PKCS#11 call failed; session dropped, will reopen');
    return new HsmUnavailableError(`PKCS#11 ${op} on ${this.token} failed: ${why(e)}`);
  }

  private closeSession(): void {
    const s = this.session;
    this.session = undefined;
    if (s) try { this.stamp(); this.m.p11.C_CloseSession(s.handle); } catch { /* gone already */ }
  }
}

/**
 * One thread's handle on a PKCS#11 module: loading it, C_Initialize and C_Finalize shared with the other threads of
 * the process, and opening a logged-in session with the KEK handles found by label.
 *
 * Everything here is synchronous and unbounded: it runs in a worker thread, whose deadline the main thread keeps
 * (src/hsm/pkcs11-lane.ts), or on the main thread itself with `timeoutMs: 0`.
 *
 * Per process, not per thread: the module's initialization (coordinated in src/hsm/pkcs11-share.ts) and the login
 * on a token (so a wrapper finding the token logged in must bring the same PIN). Per session: the session copies of
 * the KEKs, so each worker's session makes its own.
 */
import { timingSafeEqual } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';
import type { Logger } from 'pino';
import { Share } from './pkcs11-share.js';

export const K = pkcs11js;
export const code = (e: unknown): number => (e instanceof K.Pkcs11Error ? e.code : -1);
export const why = (e: unknown): string => (e instanceof Error ? e.message : String(e)); // pkcs11js messages are CKR_ names

const PIN_BAD = new Set([K.CKR_PIN_INCORRECT, K.CKR_PIN_INVALID, K.CKR_PIN_LEN_RANGE, K.CKR_PIN_LOCKED, K.CKR_PIN_EXPIRED]);

/**
 * Who logged in to which token (`${module}\0${tokenLabel}`) and with which PIN, counted per open wrapper: main
 * thread only. Login is per process and token, so the last wrapper to close logs out, and a wrapper that finds the
 * token logged in already must have the PIN of the one that logged in (see login()).
 */
export const logins = new Map<string, { users: number; pinDigest: Buffer }>();

/** A wrapper opened on the token: count it (the first one's PIN is the one logged in). */
export function joinLogin(loginKey: string, pinDigest: Buffer): void {
  const login = logins.get(loginKey);
  logins.set(loginKey, { users: (login?.users ?? 0) + 1, pinDigest: login?.pinDigest ?? pinDigest });
}

/** A wrapper closes: true when it was the last on the token, which must then log out. */
export function leaveLogin(loginKey: string): boolean {
  const login = logins.get(loginKey);
  const last = login !== undefined && --login.users === 0;
  if (last) logins.delete(loginKey);
  return last;
}

export interface Target {
  module: string; tokenLabel: string; keyLabel: string; pin: string;
  /** SHA-256 of the PIN a wrapper of this process already logged in with (see login). */
  loggedInPinDigest?: Uint8Array;
  pinDigest: Uint8Array;
}

/** A logged-in session with its own session copies of the KEKs (they die with it). */
export interface Session { handle: Buffer; keys: Map<number, Buffer>; current: number; model: string }

export class ModuleHandle {
  readonly p11: PKCS11;
  private readonly raw: PKCS11;
  private readonly share: Share;
  private left = false;

  /** Loads the module and counts this thread in. `wrap` is the test seam (see Pkcs11Options.testHook). */
  constructor(private readonly path: string, share: SharedArrayBuffer, wrap?: (p11: PKCS11) => PKCS11) {
    this.share = new Share(share);
    this.raw = new K.PKCS11();
    try { this.raw.load(path); } catch (e) { throw new Error(`cannot load PKCS#11 module ${path}: ${why(e)}`); }
    try {
      this.share.enter(() => this.initialize());
    } catch (e) {
      this.raw.close();
      throw e;
    }
    this.p11 = wrap ? wrap(this.raw) : this.raw;
  }

  /** Runs calls into the module (see Share.call): every use of `p11` goes through here. */
  call<T>(fn: () => T): T {
    return this.share.call(fn);
  }

  /** After CKR_CRYPTOKI_NOT_INITIALIZED: someone finalized the library under us; bring it back. */
  reinitialize(): void {
    this.share.reinitialize(() => this.initialize());
  }

  /** True when this call initialized the module, false when it was initialized already. */
  private initialize(): boolean {
    // Other threads call the module at the same time, so it must lock: SoftHSM initialized without CKF_OS_LOCKING_OK
    // turns its mutexes off, and concurrent calls then crash the process. (When something else in this process
    // initialized the module first, its flags hold; this code cannot tell.)
    try {
      this.raw.C_Initialize({ flags: K.CKF_OS_LOCKING_OK });
      return true;
    } catch (e) {
      if (code(e) === K.CKR_CRYPTOKI_ALREADY_INITIALIZED) return false;
      const hint = code(e) !== K.CKR_GENERAL_ERROR ? '' : ' — with SoftHSM2 this usually means SOFTHSM2_CONF ' +
        `(${process.env.SOFTHSM2_CONF ?? 'unset'}) is missing, or its directories.tokendir does not exist or is not ours`;
      throw new Error(`C_Initialize of PKCS#11 module ${this.path} failed with ${why(e)}${hint}`);
    }
  }

  /** Counts this thread out; the last of ours finalizes what one of ours initialized. Idempotent. */
  leave(): void {
    if (this.left) return;
    this.left = true;
    this.share.leave(() => {
      try { this.raw.C_Finalize(); } catch { /* finalized behind our back already */ }
    });
    try { this.raw.close(); } catch { /* nothing left to release */ }
  }
}

function findSlot(m: ModuleHandle, t: Omit<Target, 'keyLabel'>): { slot: Buffer; model: string } {
  let slots: Buffer[];
  try { slots = m.p11.C_GetSlotList(true); } catch (e) {
    if (code(e) !== K.CKR_CRYPTOKI_NOT_INITIALIZED) throw e;
    m.reinitialize();
    slots = m.p11.C_GetSlotList(true);
  }
  const found: string[] = [];
  for (const slot of slots) {
    const info = m.p11.C_GetTokenInfo(slot);
    const label = info.label.trimEnd(); // CK_TOKEN_INFO labels are blank-padded to 32 bytes
    if (label === t.tokenLabel) return { slot, model: `${info.model.trim()}, ${info.manufacturerID.trim()}` };
    if (info.flags & K.CKF_TOKEN_INITIALIZED) found.push(`'${label}'`);
  }
  throw new Error(`token '${t.tokenLabel}' not found in PKCS#11 module ${t.module}; tokens found: ${found.join(', ') || 'none'}`);
}

function login(p11: PKCS11, session: Buffer, t: Omit<Target, 'keyLabel'>): void {
  try { p11.C_Login(session, K.CKU_USER, t.pin); } catch (e) {
    // Login state is per process and token, so the token does not check the PIN again; compare with the PIN of the
    // wrapper that did log in, so that a wrong PIN cannot ride on its login.
    const known = t.loggedInPinDigest;
    const same = !known || timingSafeEqual(known, t.pinDigest);
    if (code(e) === K.CKR_USER_ALREADY_LOGGED_IN && same) return;
    if (code(e) === K.CKR_USER_ALREADY_LOGGED_IN || PIN_BAD.has(code(e))) {
      const reason = code(e) === K.CKR_USER_ALREADY_LOGGED_IN ? 'differs from the PIN already logged in' : why(e);
      throw new Error(`PIN rejected for token '${t.tokenLabel}' (${reason})`);
    }
    throw e;
  }
}

/** The KEK versions on the token (token objects labelled `${keyLabel}.v<n>`), by version. */
export function findKeys(p11: PKCS11, session: Buffer, t: Target): Map<number, Buffer> {
  const prefix = `${t.keyLabel}.v`;
  const keys = new Map<number, Buffer>();
  // Token objects only: session copies (ours or another thread's) are visible here too.
  p11.C_FindObjectsInit(session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
    { type: K.CKA_TOKEN, value: true }]);
  const handles: Buffer[] = [];
  try { for (let batch; (batch = p11.C_FindObjects(session, 64)).length > 0;) handles.push(...batch); }
  finally { p11.C_FindObjectsFinal(session); }
  for (const h of handles) {
    const [label, len] = p11.C_GetAttributeValue(session, h, [{ type: K.CKA_LABEL }, { type: K.CKA_VALUE_LEN }]);
    const name = label?.value?.toString() ?? '';
    const rest = name.startsWith(prefix) ? name.slice(prefix.length) : '';
    if (!/^[1-9]\d{0,8}$/.test(rest)) continue;
    if (keys.has(Number(rest))) throw new Error(`two keys labelled '${name}' on token '${t.tokenLabel}': refusing to guess`);
    const bytes = Buffer.isBuffer(len?.value) ? len.value.readUInt32LE(0) : 0;
    if (bytes !== 32) throw new Error(`key '${name}' on token '${t.tokenLabel}' is not AES-256 (${bytes} bytes)`);
    keys.set(Number(rest), h);
  }
  return keys;
}

function generateFirst(p11: PKCS11, session: Buffer, t: Target): Map<number, Buffer> {
  return new Map([[1, generateVersion(p11, session, t, 1)]]);
}

/** Generates KEK version `n` on the token: AES-256, SENSITIVE, never EXTRACTABLE, labelled `${keyLabel}.v<n>`. */
export function generateVersion(p11: PKCS11, session: Buffer, t: Target, n: number): Buffer {
  const label = `${t.keyLabel}.v${n}`;
  return p11.C_GenerateKey(session, { mechanism: K.CKM_AES_KEY_GEN }, [
    { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
    { type: K.CKA_VALUE_LEN, value: 32 }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_PRIVATE, value: true },
    { type: K.CKA_SENSITIVE, value: true }, { type: K.CKA_EXTRACTABLE, value: false },
    { type: K.CKA_ENCRYPT, value: true }, { type: K.CKA_DECRYPT, value: true }, { type: K.CKA_WRAP, value: true },
    { type: K.CKA_UNWRAP, value: true }, { type: K.CKA_LABEL, value: label }, { type: K.CKA_ID, value: Buffer.from(label) }]);
}

/**
 * Session-object copies of the KEKs where the module allows copying. The copy never leaves the HSM and keeps
 * SENSITIVE and non-EXTRACTABLE; it only spares file-backed tokens such as SoftHSM from opening and locking the
 * key's file on every operation (about twice as fast). It belongs to this session alone and dies with it, so every
 * session (every worker's, every reopen) makes its own. Modules that refuse C_CopyObject keep using the token objects.
 */
function sessionCopies(p11: PKCS11, session: Buffer, keys: Map<number, Buffer>): Map<number, Buffer> {
  const copies = new Map<number, Buffer>();
  for (const [version, handle] of keys) {
    try { copies.set(version, p11.C_CopyObject(session, handle, [{ type: K.CKA_TOKEN, value: false }])); }
    catch { copies.set(version, handle); }
  }
  return copies;
}

/** Opens a read-write session on the target's token and logs in (or joins the process's login, same PIN only). */
export function openLoggedIn(m: ModuleHandle, t: Omit<Target, 'keyLabel'>): { handle: Buffer; model: string } {
  const { slot, model } = findSlot(m, t);
  const handle = m.p11.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
  try {
    login(m.p11, handle, t);
  } catch (e) {
    try { m.p11.C_CloseSession(handle); } catch { /* the session may be gone already */ }
    throw e;
  }
  return { handle, model };
}

/** Opens a session, logs in and finds the KEK handles (per session, so found again on every open). */
export function openSession(m: ModuleHandle, t: Target, mayCreate: boolean, onGenerated?: (label: string) => void): Session {
  const { handle, model } = openLoggedIn(m, t);
  try {
    let keys = findKeys(m.p11, handle, t);
    if (keys.size === 0 && mayCreate) {
      keys = generateFirst(m.p11, handle, t);
      onGenerated?.(`${t.keyLabel}.v1`);
    }
    if (keys.size === 0) {
      throw new Error(`no KEK labelled '${t.keyLabel}.v<n>' on token '${t.tokenLabel}' (set createIfMissing to generate one)`);
    }
    return { handle, keys: sessionCopies(m.p11, handle, keys), current: Math.max(...keys.keys()), model };
  } catch (e) {
    try { m.p11.C_CloseSession(handle); } catch { /* the session may be gone already */ }
    throw e;
  }
}

/** How to open a PKCS#11 key wrapper (src/hsm/pkcs11.ts). */
export interface Pkcs11Options {
  module: string; tokenLabel: string; pin: string; keyLabel: string; createIfMissing?: boolean; log?: Logger;
  /**
   * Longest one PKCS#11 call may take before the calls waiting for it fail with HsmUnavailableError; default 2000
   * ms. 0: synchronous calls on the main thread with no deadline (see the file comment for when that is safe).
   */
  timeoutMs?: number;
  /**
   * Test seam, never set outside tests: a module (URL or path) whose `wrapPkcs11(p11, data)` returns a double in
   * front of the loaded module, for the faults SoftHSM cannot produce (a call that hangs, a device fault reported
   * as CKR_GENERAL_ERROR). It is imported by the thread that calls the module; `data` reaches it by structured
   * clone, so a SharedArrayBuffer in it lets a test steer a worker's double.
   */
  testHook?: { module: string; data?: unknown };
}

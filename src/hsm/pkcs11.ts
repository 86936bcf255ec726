/**
 * KeyWrapper over a PKCS#11 module (SoftHSM2 in tests, a vendor HSM in production), through pkcs11js.
 *
 * KEK versions are AES-256 token objects labelled `${keyLabel}.v${n}`; the highest n present is current. Calls are
 * synchronous pkcs11js calls on one session: Init+Encrypt (or Init+Decrypt) run back to back on Node's single thread,
 * so no other call can interleave inside an operation and the session needs no lock. The price is that each call
 * blocks the event loop for its duration (tens of µs on SoftHSM); a network HSM would want a session pool instead.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';
import type { Logger } from 'pino';
import { HsmUnavailableError, IntegrityError, type KeyWrapper, type Sealed } from './key-wrapper.js';

export interface Pkcs11Options { module: string; tokenLabel: string; pin: string; keyLabel: string; createIfMissing?: boolean; log?: Logger }

const IV_BYTES = 12;
const TAG_BYTES = 16;
const RETRY_MS = 1000; // after a failed reopen, fail fast for a while instead of blocking every call on a dead HSM
// SoftHSM answers CKR_ARGUMENTS_BAD to a NULL data pointer, which a fresh empty Buffer may have; a zero-length view
// into a real allocation always has a valid pointer.
const EMPTY = Buffer.alloc(1).subarray(0, 0);
const K = pkcs11js;
// The session (or the whole token/library) is gone: reopen on the next call, without closing the dead handle, since
// some modules reuse handle numbers (SoftHSM 2.6 does not) and it might by now name another wrapper's session.
const SESSION_GONE = new Set([K.CKR_SESSION_HANDLE_INVALID, K.CKR_SESSION_CLOSED, K.CKR_DEVICE_REMOVED,
  K.CKR_TOKEN_NOT_PRESENT, K.CKR_CRYPTOKI_NOT_INITIALIZED]);
// On decrypt, SoftHSM reports a bad GCM tag as CKR_GENERAL_ERROR; other modules use the two specific codes.
const INTEGRITY = new Set([K.CKR_ENCRYPTED_DATA_INVALID, K.CKR_ENCRYPTED_DATA_LEN_RANGE, K.CKR_GENERAL_ERROR]);
const PIN_BAD = new Set([K.CKR_PIN_INCORRECT, K.CKR_PIN_INVALID, K.CKR_PIN_LEN_RANGE, K.CKR_PIN_LOCKED, K.CKR_PIN_EXPIRED]);

/** C_Initialize is per module per process, so wrappers share one initialized module, finalized on the last close. */
interface SharedModule { p11: PKCS11; refs: number; ownsInit: boolean; logins: Map<string, { users: number; pinDigest: Buffer }> }
const modules = new Map<string, SharedModule>();

const code = (e: unknown): number => (e instanceof K.Pkcs11Error ? e.code : -1);
const why = (e: unknown): string => (e instanceof Error ? e.message : String(e)); // pkcs11js messages are CKR_ names
const asBuffer = (u: Uint8Array): Buffer =>
  u.byteLength === 0 ? EMPTY : Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const gcm = (iv: Buffer, aad: Uint8Array) => ({ mechanism: K.CKM_AES_GCM,
  parameter: { type: K.CK_PARAMS_AES_GCM, iv, aad: asBuffer(aad), ivBits: IV_BYTES * 8, tagBits: TAG_BYTES * 8 } });

function initialize(p11: PKCS11, path: string): boolean {
  try { p11.C_Initialize(); return true; } catch (e) {
    if (code(e) === K.CKR_CRYPTOKI_ALREADY_INITIALIZED) return false; // another handle in this process did; it finalizes
    const hint = code(e) !== K.CKR_GENERAL_ERROR ? '' : ' — with SoftHSM2 this usually means SOFTHSM2_CONF ' +
      `(${process.env.SOFTHSM2_CONF ?? 'unset'}) is missing, or its directories.tokendir does not exist or is not ours`;
    throw new Error(`C_Initialize of PKCS#11 module ${path} failed with ${why(e)}${hint}`);
  }
}

function acquireModule(path: string): SharedModule {
  let m = modules.get(path);
  if (!m) {
    const p11 = new K.PKCS11();
    try { p11.load(path); } catch (e) { throw new Error(`cannot load PKCS#11 module ${path}: ${why(e)}`); }
    let ownsInit: boolean;
    try { ownsInit = initialize(p11, path); } catch (e) { p11.close(); throw e; }
    m = { p11, refs: 0, ownsInit, logins: new Map() };
    modules.set(path, m);
  }
  m.refs++;
  return m;
}

function releaseModule(path: string, m: SharedModule): void {
  if (--m.refs > 0) return;
  modules.delete(path);
  try { if (m.ownsInit) m.p11.C_Finalize(); } catch { /* already finalized */ }
  try { m.p11.close(); } catch { /* nothing left to release */ }
}

export async function openPkcs11KeyWrapper(opts: Pkcs11Options): Promise<KeyWrapper> {
  const { module, tokenLabel, pin, keyLabel, log } = opts;
  const m = acquireModule(module);
  const p11 = m.p11;
  const pinDigest = createHash('sha256').update(pin).digest();
  const token = `token '${tokenLabel}'`;
  type State = { session: Buffer; keys: Map<number, Buffer>; current: number };
  let state: State | undefined;
  let [current, retryAt, closed, model] = [0, 0, false, ''];

  function findSlot(): Buffer {
    let slots: Buffer[];
    try { slots = p11.C_GetSlotList(true); } catch (e) {
      if (code(e) !== K.CKR_CRYPTOKI_NOT_INITIALIZED) throw e;
      m.ownsInit = initialize(p11, module) || m.ownsInit; // someone finalized the library under us: bring it back
      slots = p11.C_GetSlotList(true);
    }
    const found: string[] = [];
    for (const slot of slots) {
      const info = p11.C_GetTokenInfo(slot);
      const label = info.label.trimEnd(); // CK_TOKEN_INFO labels are blank-padded to 32 bytes
      if (label === tokenLabel) { model = `${info.model.trim()}, ${info.manufacturerID.trim()}`; return slot; }
      if (info.flags & K.CKF_TOKEN_INITIALIZED) found.push(`'${label}'`);
    }
    throw new Error(`${token} not found in PKCS#11 module ${module}; tokens found: ${found.join(', ') || 'none'}`);
  }

  function login(session: Buffer): void {
    try { p11.C_Login(session, K.CKU_USER, pin); } catch (e) {
      // Login state is per process and token, so the token does not check the PIN again; compare with the PIN of
      // the wrapper that did log in, so that a wrong PIN cannot ride on its login.
      const known = m.logins.get(tokenLabel);
      if (code(e) === K.CKR_USER_ALREADY_LOGGED_IN && (!known || timingSafeEqual(known.pinDigest, pinDigest))) return;
      if (code(e) === K.CKR_USER_ALREADY_LOGGED_IN || PIN_BAD.has(code(e))) {
        throw new Error(`PIN rejected for ${token} (${code(e) === K.CKR_USER_ALREADY_LOGGED_IN ? 'differs from the PIN already logged in' : why(e)})`);
      }
      throw e;
    }
  }

  function findKeys(session: Buffer): Map<number, Buffer> {
    const prefix = `${keyLabel}.v`;
    const keys = new Map<number, Buffer>();
    // Token objects only: session copies (ours or another wrapper's in this process) are visible here too.
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
      if (keys.has(Number(rest))) throw new Error(`two keys labelled '${name}' on ${token}: refusing to guess`);
      const bytes = Buffer.isBuffer(len?.value) ? len.value.readUInt32LE(0) : 0;
      if (bytes !== 32) throw new Error(`key '${name}' on ${token} is not AES-256 (${bytes} bytes)`);
      keys.set(Number(rest), h);
    }
    return keys;
  }

  function generateFirst(session: Buffer): Map<number, Buffer> {
    const label = `${keyLabel}.v1`;
    const key = p11.C_GenerateKey(session, { mechanism: K.CKM_AES_KEY_GEN }, [
      { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
      { type: K.CKA_VALUE_LEN, value: 32 }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_PRIVATE, value: true },
      { type: K.CKA_SENSITIVE, value: true }, { type: K.CKA_EXTRACTABLE, value: false },
      { type: K.CKA_ENCRYPT, value: true }, { type: K.CKA_DECRYPT, value: true }, { type: K.CKA_WRAP, value: true },
      { type: K.CKA_UNWRAP, value: true }, { type: K.CKA_LABEL, value: label }, { type: K.CKA_ID, value: Buffer.from(label) }]);
    log?.warn({ token: tokenLabel, key: label }, 'no KEK found on the token: generated a new one');
    return new Map([[1, key]]);
  }

  /**
   * Works on session-object copies of the KEKs where the module allows copying. The copy never leaves the HSM and
   * keeps SENSITIVE and non-EXTRACTABLE; it only spares file-backed tokens such as SoftHSM from opening and locking
   * the key's file on every operation (about twice as fast). It dies with the session and is made again on reopen.
   * Modules that refuse C_CopyObject keep working on the token objects.
   */
  function sessionCopies(session: Buffer, keys: Map<number, Buffer>): Map<number, Buffer> {
    const copies = new Map<number, Buffer>();
    for (const [version, handle] of keys) {
      try {
        copies.set(version, p11.C_CopyObject(session, handle, [{ type: K.CKA_TOKEN, value: false }]));
      } catch {
        copies.set(version, handle);
      }
    }
    return copies;
  }

  /** Opens a session, logs in and finds the KEK handles; handles are per session, so they are found again too. */
  function connect(mayCreate: boolean): State {
    const session = p11.C_OpenSession(findSlot(), K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
    try {
      login(session);
      let keys = findKeys(session);
      if (keys.size === 0 && mayCreate) keys = generateFirst(session);
      if (keys.size === 0) throw new Error(`no KEK labelled '${keyLabel}.v<n>' on ${token} (set createIfMissing to generate one)`);
      return { session, keys: sessionCopies(session, keys), current: Math.max(...keys.keys()) };
    } catch (e) {
      try { p11.C_CloseSession(session); } catch { /* the session may be gone already */ }
      throw e;
    }
  }

  function ensure(): State {
    if (closed) throw new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
    if (state) return state;
    if (Date.now() < retryAt) throw new HsmUnavailableError(`PKCS#11 ${token} unavailable; reconnect pending`);
    try {
      state = connect(false);
      current = state.current;
      log?.info({ token: tokenLabel, kekVersion: current }, 'PKCS#11 session reopened');
      return state;
    } catch (e) {
      retryAt = Date.now() + RETRY_MS;
      log?.warn({ token: tokenLabel, err: why(e) }, 'PKCS#11 session reopen failed');
      throw new HsmUnavailableError(`cannot reopen a PKCS#11 session on ${token}: ${why(e)}`);
    }
  }

  function run<T>(op: 'encrypt' | 'decrypt', fn: (s: State) => T): T {
    const s = ensure();
    try { return fn(s); } catch (e) {
      if (e instanceof IntegrityError) throw e;
      if (op === 'decrypt' && INTEGRITY.has(code(e))) throw new IntegrityError(`ciphertext failed authentication (${why(e)})`);
      // Anything else may leave the session dead or mid-operation: drop it so the next call starts on a fresh one.
      state = undefined;
      if (!SESSION_GONE.has(code(e))) { try { p11.C_CloseSession(s.session); } catch { /* best effort */ } }
      log?.warn({ token: tokenLabel, op, err: why(e) }, 'PKCS#11 call failed; session dropped, will reopen');
      throw new HsmUnavailableError(`PKCS#11 ${op} on ${token} failed: ${why(e)}`);
    }
  }

  try { state = connect(opts.createIfMissing ?? false); } catch (e) { releaseModule(module, m); throw e; }
  current = state.current;
  const users = m.logins.get(tokenLabel)?.users ?? 0;
  m.logins.set(tokenLabel, { users: users + 1, pinDigest: m.logins.get(tokenLabel)?.pinDigest ?? pinDigest });
  const description = `PKCS#11 ${token} (${model}) via ${module}, KEK '${keyLabel}'`;
  log?.info({ token: tokenLabel, kekVersion: current, versions: [...state.keys.keys()] }, 'PKCS#11 key wrapper open');

  return {
    description,
    isHardware: true,
    currentVersion: () => current,
    async encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> {
      return run('encrypt', (s) => {
        const iv = randomBytes(IV_BYTES);
        p11.C_EncryptInit(s.session, gcm(iv, aad), s.keys.get(s.current)!);
        const ciphertext = p11.C_Encrypt(s.session, asBuffer(plaintext), Buffer.alloc(plaintext.byteLength + TAG_BYTES));
        return { kekVersion: s.current, iv, ciphertext };
      });
    },
    async decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
      return run('decrypt', (s) => {
        const key = s.keys.get(sealed.kekVersion);
        if (!key) throw new IntegrityError(`unknown KEK version ${sealed.kekVersion} on ${token}`);
        if (sealed.iv.length !== IV_BYTES || sealed.ciphertext.length < TAG_BYTES) throw new IntegrityError('malformed sealed value');
        p11.C_DecryptInit(s.session, gcm(sealed.iv, aad), key);
        const out = Buffer.alloc(sealed.ciphertext.length); // SoftHSM wants room for the tag too
        try { return p11.C_Decrypt(s.session, sealed.ciphertext, out); } catch (e) { out.fill(0); throw e; }
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      const [s, l] = [state, m.logins.get(tokenLabel)];
      state = undefined;
      const lastOnToken = l !== undefined && --l.users === 0;
      if (lastOnToken) m.logins.delete(tokenLabel);
      // Logging out ends the login for every session of this process on the token, so only the last wrapper does.
      try { if (s && lastOnToken) p11.C_Logout(s.session); } catch { /* not logged in any more */ }
      try { if (s) p11.C_CloseSession(s.session); } catch { /* already gone */ }
      releaseModule(module, m);
    },
  };
}

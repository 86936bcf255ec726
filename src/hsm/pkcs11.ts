/**
 * KeyWrapper over a PKCS#11 module (SoftHSM2 in tests, a vendor HSM in production), through pkcs11js.
 *
 * KEK versions are AES-256 token objects labelled `${keyLabel}.v${n}`; the highest n present is current.
 *
 * Bounded calls. C_Encrypt and C_Decrypt run on libuv's thread pool (pkcs11js' asynchronous forms), each under a
 * deadline (`timeoutMs`, default 2 s), so a hung HSM costs a 503 instead of the event loop. A session whose call
 * timed out is abandoned, since its operation may still be running, and is closed when the call comes back. Until
 * then the HSM gets no call at all, because C_EncryptInit/C_DecryptInit and opening a session exist in pkcs11js only
 * as synchronous calls, which nothing can bound: a stalled HSM gets fast HsmUnavailableErrors, and the wrapper
 * reopens by itself once the stalled call returns (if it never does, the wrapper stays unavailable and says so in
 * its log). Still unbounded: a module that hangs in Init or in the session set-up on its first call after a quiet
 * time, when no call of ours is out to notice.
 *
 * The price is throughput on a fast local module. An asynchronous call costs two thread switches, more than
 * SoftHSM's own work: on the 2-core dev VM (32-byte AES-GCM on session copies, 125 calls under Promise.all) SoftHSM
 * does ~19–25k decrypts/s this way against ~37–52k/s with synchronous calls, and the bench's 128-key enc_keys phase
 * fell from ~13k to ~6–8k keys/s (1-key requests: ~500–930 to ~520–590 req/s; a loaded, noisy machine). With a
 * network HSM the balance turns: a round trip costs far more than the switches, and a synchronous one would stall
 * every request for its whole duration. A synchronous call cannot be bounded at all (nothing interrupts the event
 * loop's own thread), so it is not the default. `timeoutMs: 0` chooses it: synchronous calls without a deadline,
 * about as fast as before (~12k keys/s in the same bench), for an in-process software module such as SoftHSM,
 * whose encrypt and decrypt on session copies do no I/O; with a module that can hang, a hang stops the whole KME.
 *
 * Sessions. A call needs a session to itself from Init to the end of its operation, so calls share a small pool of
 * sessions: at most half of libuv's threads (UV_THREADPOOL_SIZE, default 4), so that a hung HSM can hold no more
 * than that and file system, DNS and crypto work keep the rest. The pool also caps the calls in flight; a network
 * HSM wants a larger UV_THREADPOOL_SIZE. A call that never returns keeps its thread, and Node cannot exit before it
 * does (libuv joins its threads at exit): stopping the KME then takes a kill.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';
import type { Logger } from 'pino';
import { HsmUnavailableError, IntegrityError, type KeyWrapper, type Sealed } from './key-wrapper.js';

export interface Pkcs11Options {
  module: string; tokenLabel: string; pin: string; keyLabel: string; createIfMissing?: boolean; log?: Logger;
  /**
   * Longest one C_Encrypt or C_Decrypt may take before the call fails with HsmUnavailableError; default 2000 ms.
   * 0: synchronous calls with no deadline (faster; see the file comment for when that is safe).
   */
  timeoutMs?: number;
  /**
   * Test seam: a double in front of the loaded module, for the faults SoftHSM cannot produce (a call that hangs, a
   * device fault reported as CKR_GENERAL_ERROR). Never set outside tests.
   */
  wrapModule?: (p11: PKCS11) => PKCS11;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
const RETRY_MS = 1000; // after a failed reopen, fail fast for a while instead of blocking every call on a dead HSM
const DEFAULT_TIMEOUT_MS = 2000;
const MAX_SESSIONS = Math.max(1, Math.floor((Number(process.env.UV_THREADPOOL_SIZE) || 4) / 2));
// What the self-test encrypts and decrypts again; any fixed value would do.
const SELF_TEST = Buffer.from('qkms PKCS#11 KEK self-test value');
const SELF_TEST_AAD = Buffer.from('qkms self-test');
// SoftHSM answers CKR_ARGUMENTS_BAD to a NULL data pointer, which a fresh empty Buffer may have; a zero-length view
// into a real allocation always has a valid pointer.
const EMPTY = Buffer.alloc(1).subarray(0, 0);
const K = pkcs11js;
// The session (or the whole token/library) is gone: reopen on the next call, without closing the dead handle, since
// some modules reuse handle numbers (SoftHSM 2.6 does not) and it might by now name another wrapper's session.
const SESSION_GONE = new Set([K.CKR_SESSION_HANDLE_INVALID, K.CKR_SESSION_CLOSED, K.CKR_DEVICE_REMOVED,
  K.CKR_TOKEN_NOT_PRESENT, K.CKR_CRYPTOKI_NOT_INITIALIZED]);
// Modules that report a bad GCM tag with a specific code. SoftHSM says CKR_GENERAL_ERROR, which is also what any
// module says for an internal fault: decrypt() tells those two apart (see there).
const INTEGRITY = new Set([K.CKR_ENCRYPTED_DATA_INVALID, K.CKR_ENCRYPTED_DATA_LEN_RANGE]);
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

/** A call that ran past its deadline; its session is abandoned already. */
class TimedOut extends HsmUnavailableError {}

function initialize(p11: PKCS11, path: string): boolean {
  // Calls run on libuv's threads, so the module must lock: SoftHSM initialized without CKF_OS_LOCKING_OK turns its
  // mutexes off, and concurrent calls then crash the process. (When another handle in this process initialized the
  // module first, its flags hold; this code cannot tell.)
  try { p11.C_Initialize({ flags: K.CKF_OS_LOCKING_OK }); return true; } catch (e) {
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
  const p11 = opts.wrapModule ? opts.wrapModule(m.p11) : m.p11;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const pinDigest = createHash('sha256').update(pin).digest();
  const token = `token '${tokenLabel}'`;
  /** One session, logged in, with its own session copies of the KEKs (they die with it). */
  type Session = { session: Buffer; keys: Map<number, Buffer>; current: number };
  const idle: Session[] = [];
  const waiting: Array<{ resolve: (s: Session) => void; reject: (e: Error) => void }> = [];
  // busy: sessions a call holds; stalled: sessions abandoned by a timed-out call that has not come back yet.
  let [busy, stalled, current, retryAt, closed, model, healing] = [0, 0, 0, 0, false, '', false];
  let [drained, releaseWhenStallsEnd] = [undefined as (() => void) | undefined, false];

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
  function connect(mayCreate: boolean): Session {
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

  /** Opens one more session. Synchronous and unbounded: only called while no call of ours is stalled in the HSM. */
  function open(): Session {
    if (Date.now() < retryAt) throw new HsmUnavailableError(`PKCS#11 ${token} unavailable; reconnect pending`);
    try {
      const s = connect(false);
      current = s.current;
      if (healing) log?.info({ token: tokenLabel, kekVersion: current }, 'PKCS#11 session reopened');
      healing = false;
      return s;
    } catch (e) {
      retryAt = Date.now() + RETRY_MS;
      log?.warn({ token: tokenLabel, err: why(e) }, 'PKCS#11 session reopen failed');
      throw new HsmUnavailableError(`cannot reopen a PKCS#11 session on ${token}: ${why(e)}`);
    }
  }

  /** A session for one call: an idle one, else a new one; undefined when the call must wait for a running one. */
  function take(): Session | undefined {
    if (closed) throw new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
    // Init and opening are synchronous: an HSM that let a call run past its deadline gets no call until it answers.
    if (stalled > 0) throw new HsmUnavailableError(`PKCS#11 ${token} has not answered a call within ${timeoutMs} ms; waiting for it`);
    const s = idle.pop() ?? (busy < MAX_SESSIONS ? open() : undefined);
    if (s) busy++;
    return s;
  }

  /** Waits for a running call to hand its session over (see settle). */
  const turn = () => new Promise<Session>((resolve, reject) => waiting.push({ resolve, reject }));

  /** Hands freed sessions (or the reason there will be none) to waiting calls, in order. */
  function settle(): void {
    while (waiting.length > 0) {
      let s: Session | undefined;
      try { s = take(); } catch (e) {
        for (const w of waiting.splice(0)) w.reject(e as Error);
        break;
      }
      if (!s) break;
      waiting.shift()!.resolve(s);
    }
    if (closed && busy === 0) drained?.();
  }

  function release(s: Session): void {
    busy--;
    idle.push(s);
    settle();
  }

  const closeQuietly = (s: Session) => { try { p11.C_CloseSession(s.session); } catch { /* gone already */ } };

  /**
   * A failed call: its session may be dead or mid-operation, so it is closed (or, when the module says it is gone,
   * forgotten along with the idle ones, which died with it) and later calls start on fresh sessions.
   */
  function unavailable(s: Session, op: string, e: unknown): HsmUnavailableError {
    if (e instanceof TimedOut) return e; // the session is abandoned already
    busy--;
    healing = true;
    if (SESSION_GONE.has(code(e))) idle.length = 0; else closeQuietly(s);
    log?.warn({ token: tokenLabel, op, err: why(e) }, 'PKCS#11 call failed; session dropped, will reopen');
    settle();
    return new HsmUnavailableError(`PKCS#11 ${op} on ${token} failed: ${why(e)}`);
  }

  /** Awaits the asynchronous half of an operation under the deadline; past it, abandons the session. */
  function bounded(s: Session, op: string, call: Promise<Buffer>, onLateResult?: () => void): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        busy--;
        stalled++;
        healing = true;
        log?.error({ token: tokenLabel, op, timeoutMs }, 'PKCS#11 call timed out; session abandoned, no calls until it comes back');
        reject(new TimedOut(`PKCS#11 ${op} on ${token} did not answer within ${timeoutMs} ms`));
        call.then(() => true, (e: unknown) => !SESSION_GONE.has(code(e))).then((close) => {
          onLateResult?.();
          if (close) closeQuietly(s); // never used again: its operation may have run until now
          stalled--;
          log?.warn({ token: tokenLabel, op }, 'timed-out PKCS#11 call came back; its session is closed');
          if (stalled === 0 && releaseWhenStallsEnd) releaseModule(module, m);
          settle();
        });
        settle();
      }, timeoutMs);
      call.then(
        (out) => { clearTimeout(timer); resolve(out); },
        (e: unknown) => { clearTimeout(timer); reject(e); },
      );
    });
  }

  /** The operation proper, after its Init: asynchronous under the deadline, or synchronous when `timeoutMs` is 0. */
  function perform(s: Session, op: 'encrypt' | 'decrypt', input: Buffer, out: Buffer, onLateResult?: () => void): Promise<Buffer> {
    if (timeoutMs === 0) return Promise.resolve(op === 'encrypt' ? p11.C_Encrypt(s.session, input, out) : p11.C_Decrypt(s.session, input, out));
    const call = op === 'encrypt' ? p11.C_EncryptAsync(s.session, input, out) : p11.C_DecryptAsync(s.session, input, out);
    return bounded(s, op, call, onLateResult);
  }

  function encryptOn(s: Session, version: number, iv: Buffer, plaintext: Uint8Array, aad: Uint8Array): Promise<Buffer> {
    p11.C_EncryptInit(s.session, gcm(iv, aad), s.keys.get(version)!);
    return perform(s, 'encrypt', asBuffer(plaintext), Buffer.alloc(plaintext.byteLength + TAG_BYTES));
  }

  async function decryptOn(s: Session, sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
    const key = s.keys.get(sealed.kekVersion);
    if (!key) throw new IntegrityError(`unknown KEK version ${sealed.kekVersion} on ${token}`);
    p11.C_DecryptInit(s.session, gcm(sealed.iv, aad), key);
    const out = Buffer.alloc(sealed.ciphertext.length); // SoftHSM wants room for the tag too
    const wipe = () => out.fill(0);
    try { return await perform(s, 'decrypt', sealed.ciphertext, out, wipe); } catch (e) {
      if (!(e instanceof TimedOut)) wipe(); // a timed-out call wipes when it comes back
      throw e;
    }
  }

  /**
   * One decrypt on `s`. Returns the plaintext, or 'general' for CKR_GENERAL_ERROR with `s` still held (the caller
   * decides); the session is released on success and on an integrity failure (it is healthy), dropped otherwise.
   */
  async function decryptOnce(s: Session, sealed: Sealed, aad: Uint8Array): Promise<Buffer | 'general'> {
    try {
      const out = await decryptOn(s, sealed, aad);
      release(s);
      return out;
    } catch (e) {
      if (code(e) === K.CKR_GENERAL_ERROR) return 'general';
      if (!(e instanceof IntegrityError) && !INTEGRITY.has(code(e))) throw unavailable(s, 'decrypt', e);
      release(s);
      throw e instanceof IntegrityError ? e : new IntegrityError(`ciphertext failed authentication (${why(e)})`);
    }
  }

  /** Closes `s` and opens a fresh session in its place (the HSM just answered, so it may be called). */
  function replace(s: Session): Session {
    closeQuietly(s);
    try {
      if (closed || stalled > 0) throw new HsmUnavailableError(`PKCS#11 ${token} is ${closed ? 'closed' : 'not answering'}; no fresh session`);
      return open();
    } catch (e) {
      busy--;
      settle();
      throw e;
    }
  }

  /**
   * Known-answer self-test of a KEK on `s`: encrypt a fixed value and decrypt it back. Releases `s` when it passes;
   * when it fails, the HSM is at fault: `s` is dropped and the error is HsmUnavailableError.
   */
  async function selfTest(s: Session, version: number): Promise<void> {
    try {
      const iv = randomBytes(IV_BYTES);
      const ciphertext = await encryptOn(s, version, iv, SELF_TEST, SELF_TEST_AAD);
      const out = await decryptOn(s, { kekVersion: version, iv, ciphertext }, SELF_TEST_AAD);
      if (!out.equals(SELF_TEST)) throw new Error('the self-test value decrypted to something else');
    } catch (e) {
      throw unavailable(s, 'self-test', e);
    }
    release(s);
  }

  try { idle.push(connect(opts.createIfMissing ?? false)); } catch (e) { releaseModule(module, m); throw e; }
  current = idle[0]!.current;
  const users = m.logins.get(tokenLabel)?.users ?? 0;
  m.logins.set(tokenLabel, { users: users + 1, pinDigest: m.logins.get(tokenLabel)?.pinDigest ?? pinDigest });
  const description = `PKCS#11 ${token} (${model}) via ${module}, KEK '${keyLabel}'`;
  log?.info({ token: tokenLabel, kekVersion: current, versions: [...idle[0]!.keys.keys()] }, 'PKCS#11 key wrapper open');

  return {
    description,
    isHardware: true,
    currentVersion: () => current,
    async encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> {
      const s = take() ?? (await turn());
      try {
        const iv = randomBytes(IV_BYTES);
        const ciphertext = await encryptOn(s, s.current, iv, plaintext, aad);
        release(s);
        return { kekVersion: s.current, iv, ciphertext };
      } catch (e) {
        throw unavailable(s, 'encrypt', e);
      }
    },
    async decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
      if (closed) throw new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
      if (sealed.iv.length !== IV_BYTES || sealed.ciphertext.length < TAG_BYTES) throw new IntegrityError('malformed sealed value');
      const s = take() ?? (await turn());
      const first = await decryptOnce(s, sealed, aad);
      if (first !== 'general') return first;
      // CKR_GENERAL_ERROR: SoftHSM's answer to a bad tag, and any module's answer to an internal fault. A fault of
      // the session heals on a fresh one; if the retry fails too and the KEK still passes a self-test there, the
      // ciphertext is at fault. Otherwise the HSM is, and the session is dropped so that later calls reopen.
      log?.warn({ token: tokenLabel }, 'CKR_GENERAL_ERROR on decrypt; retrying on a fresh session');
      const fresh = replace(s);
      const second = await decryptOnce(fresh, sealed, aad);
      if (second !== 'general') return second;
      await selfTest(fresh, sealed.kekVersion);
      throw new IntegrityError('ciphertext failed authentication (CKR_GENERAL_ERROR twice; the KEK passed its self-test)');
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const w of waiting.splice(0)) w.reject(new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`));
      if (busy > 0) await new Promise<void>((r) => (drained = r)); // calls in flight end within their deadline
      const l = m.logins.get(tokenLabel);
      const lastOnToken = l !== undefined && --l.users === 0;
      if (lastOnToken) m.logins.delete(tokenLabel);
      const sessions = idle.splice(0);
      // Logging out ends the login for every session of this process on the token, so only the last wrapper does.
      try { if (sessions[0] && lastOnToken) p11.C_Logout(sessions[0].session); } catch { /* not logged in any more */ }
      sessions.forEach(closeQuietly);
      // A call still stalled in the module must not see it finalized under it: release when it comes back.
      if (stalled === 0) releaseModule(module, m); else releaseWhenStallsEnd = true;
    },
  };
}

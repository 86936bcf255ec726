/**
 * `timeoutMs: 0`: the PKCS#11 engine on the main thread, one synchronous call at a time, with no deadline.
 *
 * Faster than the worker for callers that await each call before making the next (no thread switch per call), as
 * fast for bursts. Unbounded: nothing interrupts the event loop's own thread, so a module call that hangs stops the
 * whole KME. Only for an in-process software module such as SoftHSM, whose encrypt and decrypt on session copies do
 * no I/O. Same contract and the same fault rules as the worker (they share src/hsm/pkcs11-engine.ts).
 */
import { createHash } from 'node:crypto';
import type { PKCS11 } from 'pkcs11js';
import { HsmUnavailableError, IntegrityError, type KekVersions, type KeyWrapper, type Sealed } from './key-wrapper.js';
import { pkcs11KekVersions } from './pkcs11-kek-versions.js';
import { Engine, IV_BYTES, TAG_BYTES } from './pkcs11-engine.js';
import { joinLogin, leaveLogin, logins, ModuleHandle, type Pkcs11Options } from './pkcs11-module.js';
import { moduleShare } from './pkcs11-share.js';

export async function openSynchronousWrapper(opts: Pkcs11Options): Promise<KeyWrapper & KekVersions> {
  const { module, tokenLabel, keyLabel, log } = opts;
  const token = `token '${tokenLabel}'`;
  const pinDigest = createHash('sha256').update(opts.pin).digest();
  const loginKey = `${module}\0${tokenLabel}`;
  let wrap: ((p11: PKCS11) => PKCS11) | undefined;
  if (opts.testHook) {
    const hook = (await import(opts.testHook.module)) as { wrapPkcs11(p11: PKCS11, data: unknown): PKCS11 };
    wrap = (p11) => hook.wrapPkcs11(p11, opts.testHook!.data);
  }
  const m = new ModuleHandle(module, moduleShare(module), wrap);
  const target = { module, tokenLabel, keyLabel, pin: opts.pin, pinDigest, loggedInPinDigest: logins.get(loginKey)?.pinDigest };
  const engine = new Engine(m, target, (level, fields, msg) => log?.[level](fields, msg));
  let session;
  try { session = engine.open(opts.createIfMissing ?? false); } catch (e) { m.leave(); throw e; }
  joinLogin(loginKey, pinDigest);
  log?.info({ token: tokenLabel, kekVersion: session.current, versions: [...session.keys.keys()] }, 'PKCS#11 key wrapper open');
  let closed = false;
  const usable = () => {
    if (closed) throw new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
  };

  return {
    ...pkcs11KekVersions(opts),
    description: `PKCS#11 ${token} (${session.model}) via ${module}, KEK '${keyLabel}'`,
    isHardware: true,
    currentVersion: () => engine.current,
    async encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> {
      usable();
      const iv = Buffer.alloc(IV_BYTES);
      const ciphertext = Buffer.alloc(plaintext.byteLength + TAG_BYTES);
      const kekVersion = engine.encrypt(asBuffer(plaintext), asBuffer(aad), iv, ciphertext);
      return { kekVersion, iv, ciphertext };
    },
    async decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
      usable();
      if (sealed.iv.length !== IV_BYTES || sealed.ciphertext.length < TAG_BYTES) throw new IntegrityError('malformed sealed value');
      const out = Buffer.alloc(sealed.ciphertext.length); // room for the tag too; the plaintext is its start
      return out.subarray(0, engine.decrypt(sealed.kekVersion, sealed.iv, sealed.ciphertext, asBuffer(aad), out));
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      const lastOnToken = leaveLogin(loginKey);
      engine.close(lastOnToken);
      m.leave();
    },
  };
}

const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

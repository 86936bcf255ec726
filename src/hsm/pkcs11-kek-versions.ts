import { createHash } from 'node:crypto';
import type { PKCS11 } from 'pkcs11js';
import type { KekVersions } from './key-wrapper.js';
import { findKeys, generateVersion, logins, ModuleHandle, openLoggedIn, type Pkcs11Options, type Target } from './pkcs11-module.js';
import { moduleShare } from './pkcs11-share.js';

/**
 * KEK versions on a PKCS#11 token (token objects `${keyLabel}.v<n>`): listed, generated and destroyed through a short
 * session of their own on the main thread (an operator's action, rare; the wrapper's sessions are untouched). The
 * wrapper's sessions hold the versions they found when they opened: after a new one is made, the KME opens a fresh
 * wrapper (`needsReopen`), and after one is destroyed it does so too, so that no session keeps a copy of it.
 */
export function pkcs11KekVersions(opts: Pkcs11Options): KekVersions {
  const loginKey = `${opts.module}\0${opts.tokenLabel}`;
  function withSession<T>(run: (p11: PKCS11, session: Buffer, t: Target) => T): T {
    const m = new ModuleHandle(opts.module, moduleShare(opts.module));
    try {
      const pinDigest = createHash('sha256').update(opts.pin).digest();
      const t: Target = { module: opts.module, tokenLabel: opts.tokenLabel, keyLabel: opts.keyLabel, pin: opts.pin, pinDigest, loggedInPinDigest: logins.get(loginKey)?.pinDigest };
      // Inside `call`, as every use of the module: a C_Finalize elsewhere in the process waits for it (pkcs11-share.ts).
      return m.call(() => {
        const { handle } = openLoggedIn(m, t);
        try {
          return run(m.p11, handle, t);
        } finally {
          m.p11.C_CloseSession(handle);
        }
      });
    } finally {
      m.leave();
    }
  }
  const token = `token '${opts.tokenLabel}'`;
  return {
    needsReopen: true,
    listVersions: async () => withSession((p11, s, t) => [...findKeys(p11, s, t).keys()].sort((a, b) => a - b)),
    createVersion: async (n) =>
      withSession((p11, s, t) => {
        const held = [...findKeys(p11, s, t).keys()];
        if (held.some((v) => v >= n)) throw new Error(`KEK version ${n} is not above every version on ${token} (${held.join(', ')})`);
        generateVersion(p11, s, t, n);
      }),
    destroyVersion: async (n) =>
      withSession((p11, s, t) => {
        const keys = findKeys(p11, s, t);
        if (n >= Math.max(...keys.keys())) throw new Error(`KEK version ${n} is the current one on ${token}`);
        const handle = keys.get(n);
        if (handle) p11.C_DestroyObject(s, handle);
      }),
  };
}

/**
 * The thread behind a PKCS#11 signing key (src/hsm/pkcs11-signing-key.ts): its own module handle and session, and
 * synchronous pkcs11js calls, one signature per message. It may block in the module as long as the HSM takes; the
 * main thread keeps the deadline. Loaded as CommonJS (see pkcs11-signing-worker-entry.cjs): no top-level await here.
 *
 * The key pair is found by label (private key: CKO_PRIVATE_KEY, CKK_EC; public key: CKO_PUBLIC_KEY with the same
 * label) and, when allowed, generated on the token: P-256, private half SENSITIVE and not EXTRACTABLE, SIGN only.
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import type { PKCS11 } from 'pkcs11js';
import { K, ModuleHandle, openLoggedIn, why } from './pkcs11-module.js';

export interface SigningWorkerData {
  module: string;
  share: SharedArrayBuffer;
  tokenLabel: string;
  pin: string;
  loggedInPinDigest?: Uint8Array;
  label: string;
  mayCreate: boolean;
}
export type ToSigner = { t: 'sign'; id: number; message: Uint8Array } | { t: 'close'; logout: boolean };
export type FromSigner =
  | { t: 'booted' } // the thread's code is loaded; the module comes next
  | { t: 'ready'; spki: Uint8Array; model: string; generated: boolean }
  | { t: 'failed'; message: string }
  | { t: 'signed'; id: number; signature: Uint8Array }
  | { t: 'error'; id: number; message: string };

const P256 = Buffer.from('06082a8648ce3d030107', 'hex'); // the DER OID of prime256v1, as CKA_EC_PARAMS
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

const data = workerData as SigningWorkerData;
const port = parentPort!;
const post = (m: FromSigner) => port.postMessage(m);
let mod: ModuleHandle | undefined;
let session: Buffer | undefined;
let privateKey: Buffer | undefined;

function end(logout: boolean): never {
  try {
    if (session && mod) {
      const [m, s] = [mod, session];
      m.call(() => {
        if (logout) try { m.p11.C_Logout(s); } catch { /* logged out already */ }
        m.p11.C_CloseSession(s);
      });
    }
  } catch { /* the session is gone with the module */ }
  mod?.leave();
  process.exit(0); // in a worker, ends this thread only
}

function find(p11: PKCS11, s: Buffer, cls: number): Buffer[] {
  p11.C_FindObjectsInit(s, [{ type: K.CKA_CLASS, value: cls }, { type: K.CKA_KEY_TYPE, value: K.CKK_EC },
    { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: data.label }]);
  try { return p11.C_FindObjects(s, 2); } finally { p11.C_FindObjectsFinal(s); }
}

function generate(p11: PKCS11, s: Buffer): void {
  const common = [{ type: K.CKA_KEY_TYPE, value: K.CKK_EC }, { type: K.CKA_TOKEN, value: true },
    { type: K.CKA_LABEL, value: data.label }, { type: K.CKA_ID, value: Buffer.from(data.label) }];
  p11.C_GenerateKeyPair(s, { mechanism: K.CKM_EC_KEY_PAIR_GEN },
    [...common, { type: K.CKA_CLASS, value: K.CKO_PUBLIC_KEY }, { type: K.CKA_EC_PARAMS, value: P256 }, { type: K.CKA_VERIFY, value: true }],
    [...common, { type: K.CKA_CLASS, value: K.CKO_PRIVATE_KEY }, { type: K.CKA_PRIVATE, value: true }, { type: K.CKA_SENSITIVE, value: true },
      { type: K.CKA_EXTRACTABLE, value: false }, { type: K.CKA_SIGN, value: true }]);
}

/** The public half as SPKI: CKA_EC_POINT is the uncompressed point inside a DER OCTET STRING. */
function spkiOf(p11: PKCS11, s: Buffer, pub: Buffer): Buffer {
  const [params, point] = p11.C_GetAttributeValue(s, pub, [{ type: K.CKA_EC_PARAMS }, { type: K.CKA_EC_POINT }]);
  if (!Buffer.isBuffer(params?.value) || !params.value.equals(P256)) throw new Error(`key '${data.label}' on token '${data.tokenLabel}' is not a P-256 key`);
  const raw = point?.value as Buffer;
  const q = raw.length === 67 && raw[0] === 0x04 && raw[1] === 65 ? raw.subarray(2) : raw; // unwrap the OCTET STRING
  if (q.length !== 65 || q[0] !== 0x04) throw new Error(`key '${data.label}' on token '${data.tokenLabel}' has an EC point this code cannot read`);
  return Buffer.concat([P256_SPKI_PREFIX, q]);
}

try {
  post({ t: 'booted' });
  mod = new ModuleHandle(data.module, data.share);
  const m = mod;
  const target = { module: data.module, tokenLabel: data.tokenLabel, pin: data.pin, loggedInPinDigest: data.loggedInPinDigest,
    pinDigest: createHash('sha256').update(data.pin).digest() };
  const opened = m.call(() => openLoggedIn(m, target));
  session = opened.handle;
  const s = session;
  const ready = m.call(() => {
    let generated = false;
    let [priv, pub] = [find(m.p11, s, K.CKO_PRIVATE_KEY), find(m.p11, s, K.CKO_PUBLIC_KEY)];
    if (priv.length === 0 && pub.length === 0 && data.mayCreate) {
      generate(m.p11, s);
      [priv, pub, generated] = [find(m.p11, s, K.CKO_PRIVATE_KEY), find(m.p11, s, K.CKO_PUBLIC_KEY), true];
    }
    if (priv.length !== 1 || pub.length !== 1) {
      const what = priv.length > 1 || pub.length > 1 ? 'more than one key pair' : 'no EC key pair (private and public key)';
      throw new Error(`${what} labelled '${data.label}' on token '${data.tokenLabel}'${data.mayCreate ? '' : ' (set create_key_if_missing to generate one)'}`);
    }
    privateKey = priv[0];
    return { spki: spkiOf(m.p11, s, pub[0]!), generated };
  });
  post({ t: 'ready', spki: ready.spki, model: opened.model, generated: ready.generated });
} catch (e) {
  post({ t: 'failed', message: why(e) });
  end(false);
}

port.on('message', (msg: ToSigner) => {
  if (msg.t === 'close') end(msg.logout);
  const [m, s, key] = [mod!, session!, privateKey!];
  try {
    const digest = createHash('sha256').update(msg.message).digest();
    const signature = m.call(() => {
      m.p11.C_SignInit(s, { mechanism: K.CKM_ECDSA }, key);
      return m.p11.C_Sign(s, digest, Buffer.alloc(64));
    });
    post({ t: 'signed', id: msg.id, signature });
  } catch (e) {
    post({ t: 'error', id: msg.id, message: why(e) });
  }
});

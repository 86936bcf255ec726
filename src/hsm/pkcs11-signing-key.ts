/**
 * SigningKey on a PKCS#11 token: an ECDSA P-256 key pair labelled `label`, used through a worker thread of its own
 * (src/hsm/pkcs11-signing-worker.ts) so that an HSM that stops answering costs a signature a timeout, never the
 * event loop. A call past its deadline abandons the thread (it may be stuck in the module; it is told nothing more
 * and left to end by itself) and the next call starts a fresh one. Checkpoints are signed about once a second, so
 * nothing here is batched.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { workerEntry } from '../runtime-paths.js';
import type { Logger } from '../log.js';
import { HsmUnavailableError } from './key-wrapper.js';
import { joinLogin, leaveLogin, logins } from './pkcs11-module.js';
import { moduleShare } from './pkcs11-share.js';
import type { FromSigner, SigningWorkerData, ToSigner } from './pkcs11-signing-worker.js';
import { ecdsaRawToDer, type SigningKey } from './signing-key.js';

const ENTRY = workerEntry(import.meta.url, 'pkcs11-signing-worker');

export interface Pkcs11SigningKeyOptions {
  module: string;
  tokenLabel: string;
  pin: string;
  label: string;
  createIfMissing?: boolean;
  /** Longest the opening (once the thread's code is loaded) or a signature may take; default 5000 ms. */
  timeoutMs?: number;
  log?: Logger;
}

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve(sig: Buffer): void; reject(e: Error): void; timer: NodeJS.Timeout }>;
}

export async function openPkcs11SigningKey(opts: Pkcs11SigningKeyOptions): Promise<SigningKey> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const token = `token '${opts.tokenLabel}'`;
  const loginKey = `${opts.module}\0${opts.tokenLabel}`;
  const pinDigest = createHash('sha256').update(opts.pin).digest();
  let publicKey: Buffer | undefined;
  let thread: Promise<Thread> | undefined;
  let [seq, closed] = [0, false];

  function start(mayCreate: boolean): Promise<Thread> {
    const data: SigningWorkerData = {
      module: opts.module, share: moduleShare(opts.module), tokenLabel: opts.tokenLabel, pin: opts.pin,
      loggedInPinDigest: logins.get(loginKey)?.pinDigest, label: opts.label, mayCreate,
    };
    // execArgv []: the entry registers the TypeScript loader itself; inherited loaders (a test runner's) only cost time.
    const worker = new Worker(ENTRY, { workerData: data, execArgv: [] });
    const t: Thread = { worker, pending: new Map() };
    const failAll = (e: Error) => {
      for (const p of t.pending.values()) (clearTimeout(p.timer), p.reject(e));
      t.pending.clear();
    };
    return new Promise<Thread>((resolve, reject) => {
      // The deadline covers the module, from when the thread has loaded its code (a busy machine can take seconds
      // to load and compile JavaScript; a CI run with three test files at a time failed a KME's start here).
      let timer: NodeJS.Timeout | undefined;
      worker.on('message', (m: FromSigner) => {
        if (m.t === 'booted') {
          timer = setTimeout(() => (abandon(t), reject(new HsmUnavailableError(`PKCS#11 ${token}: the signing key did not open within ${timeoutMs} ms`))), timeoutMs);
        } else if (m.t === 'ready') {
          clearTimeout(timer);
          const spki = Buffer.from(m.spki);
          if (publicKey && !publicKey.equals(spki)) return reject(new Error(`the key labelled '${opts.label}' on ${token} changed while the KME ran`));
          publicKey = spki;
          if (m.generated) opts.log?.warn({ token: opts.tokenLabel, label: opts.label }, 'generated a new checkpoint signing key on the token');
          resolve(t);
        } else if (m.t === 'failed') {
          clearTimeout(timer);
          reject(new Error(m.message));
        } else {
          const p = t.pending.get(m.id);
          if (!p) return; // answered after its deadline
          t.pending.delete(m.id);
          clearTimeout(p.timer);
          if (m.t === 'signed') p.resolve(ecdsaRawToDer(Buffer.from(m.signature)));
          else p.reject(new HsmUnavailableError(`PKCS#11 ${token}: signing failed: ${m.message}`));
        }
      });
      worker.on('error', (e) => (clearTimeout(timer), reject(e), failAll(new HsmUnavailableError(`PKCS#11 ${token}: signing thread failed: ${e.message}`))));
      worker.on('exit', () => {
        clearTimeout(timer);
        const e = new HsmUnavailableError(`PKCS#11 ${token}: the signing thread ended`);
        reject(e); // one that ends before it is ready (no-op after)
        failAll(e);
      });
    });
  }

  function abandon(t: Thread): void {
    if (thread) thread.then((cur) => cur === t && (thread = undefined), () => undefined);
    t.worker.unref();
    for (const p of t.pending.values()) (clearTimeout(p.timer), p.reject(new HsmUnavailableError(`PKCS#11 ${token} did not sign within ${timeoutMs} ms`)));
    t.pending.clear();
  }

  // The first start learns the public key (and may generate the pair); later ones must find the same.
  thread = Promise.resolve(await start(opts.createIfMissing ?? false));
  joinLogin(loginKey, pinDigest);
  return {
    description: `PKCS#11 ${token}, ECDSA P-256 key '${opts.label}'`,
    get publicKey() {
      return publicKey!;
    },
    async sign(message: Buffer): Promise<Buffer> {
      if (closed) throw new HsmUnavailableError(`PKCS#11 signing key on ${token} is closed`);
      thread ??= start(false).catch((e: Error) => {
        thread = undefined;
        throw new HsmUnavailableError(`PKCS#11 ${token}: cannot open the signing key: ${e.message}`);
      });
      const t = await thread;
      const id = ++seq;
      return new Promise<Buffer>((resolve, reject) => {
        const timer = setTimeout(() => abandon(t), timeoutMs);
        t.pending.set(id, { resolve, reject, timer });
        t.worker.postMessage({ t: 'sign', id, message } satisfies ToSigner);
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      const logout = leaveLogin(loginKey);
      const t = await thread?.catch(() => undefined);
      if (!t) return;
      const exited = new Promise<void>((r) => t.worker.once('exit', () => r()));
      t.worker.postMessage({ t: 'close', logout } satisfies ToSigner);
      const late = setTimeout(() => t.worker.unref(), timeoutMs);
      await Promise.race([exited, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
      clearTimeout(late);
    },
  };
}

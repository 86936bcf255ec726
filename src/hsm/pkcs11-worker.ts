/**
 * The worker thread behind one PKCS#11 lane (src/hsm/pkcs11-lane.ts): its own module handle and session, and
 * SYNCHRONOUS pkcs11js calls, a batch of them back to back per message. The thread may block in the module for as
 * long as the HSM takes — that is its purpose: the main thread never waits for it beyond its deadline.
 *
 * Shared with the main thread, beside the messages: `control`, where this thread stamps the time before each
 * PKCS#11 call (the main thread's deadline reads it) and where the main thread raises ABANDONED when a call ran past
 * its deadline. An abandoned thread stops before its next call, closes its session (its operation may have run
 * until now, so it is never used again), leaves the module and ends. From the sources it is started by
 * pkcs11-worker-entry.cjs, as CommonJS: no top-level await and no import.meta here or in what this file imports.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { workerData } from 'node:worker_threads';
import type { PKCS11 } from 'pkcs11js';
import { Engine } from './pkcs11-engine.js';
import { ModuleHandle, why, type Target } from './pkcs11-module.js';
import { ABANDONED, runBatch, STAMP, type FromWorker, type ToWorker, type WorkerData } from './pkcs11-batch.js';

const data = workerData as WorkerData;
const port = data.port;
const post = (m: FromWorker) => port.postMessage(m);
const stamps = new BigInt64Array(data.control, 0, 1);
const flags = new Int32Array(data.control);
const stamp = () => Atomics.store(stamps, STAMP, BigInt(Date.now()));
const abandoned = () => Atomics.load(flags, ABANDONED) === 1;
post({ t: 'booted' });

let mod: ModuleHandle | undefined;
let engine: Engine | undefined;

/** Ends this thread; after it leaves the module, since the last thread out finalizes it. */
function end(logout: boolean): never {
  try { engine?.close(logout); } finally { mod?.leave(); }
  process.exit(0); // in a worker, ends this thread only
}

try {
  stamp();
  let wrap: ((p11: PKCS11) => PKCS11) | undefined;
  if (data.testHook) {
    // require, not import(): from the sources this thread loads its code as CommonJS (see pkcs11-worker-entry.cjs);
    // createRequire, because compiled it is an ES module, which has no `require`.
    const hookPath = fileURLToPath(data.testHook.module);
    const hook = createRequire(hookPath)(hookPath) as { wrapPkcs11(p11: PKCS11, data: unknown): PKCS11 };
    wrap = (p11) => hook.wrapPkcs11(p11, data.testHook!.data);
  }
  const target: Target = { ...data.target, pinDigest: createHash('sha256').update(data.target.pin).digest() };
  mod = new ModuleHandle(target.module, data.share, wrap);
  engine = new Engine(mod, target, (level, fields, msg) => post({ t: 'log', level, fields, msg }), stamp);
  const s = engine.open(data.mayCreate);
  if (abandoned()) end(false);
  post({ t: 'ready', current: s.current, versions: [...s.keys.keys()], model: s.model });
} catch (e) {
  post({ t: 'failed', message: why(e) });
  end(false);
}

function handle(m: ToWorker): void {
  if (m.t === 'close' || abandoned()) end(m.t === 'close' && m.logout);
  const e = engine!;
  const errors = runBatch(m.place.own ?? data.arena, m.place, m.n, {
    encrypt: (plaintext, aad, iv, out) => e.encrypt(plaintext, aad, iv, out),
    decrypt: (version, iv, ciphertext, aad, out) => e.decrypt(version, iv, ciphertext, aad, out),
    proceed: () => !abandoned(),
  });
  if (!errors || abandoned()) end(false); // abandoned while its last call ran: the lane reads no answer from it
  post({ t: 'done', id: m.id, current: e.current, ...(errors.length > 0 ? { errors } : {}) });
}

port.on('message', handle);
port.on('close', () => end(false)); // the lane has gone: nothing will ask for the session any more

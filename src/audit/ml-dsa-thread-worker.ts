/**
 * The thread behind MlDsaThread (src/audit/ml-dsa-thread.ts): holds the ML-DSA-65 secret key it was started with
 * and signs one message per request, FIPS 204 pure mode with the empty context (as ml-dsa-note.ts). Loaded as
 * CommonJS (see ml-dsa-thread-worker-entry.cjs): no top-level await here.
 */
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';

export interface MlDsaWorkerData {
  secretKey: Uint8Array;
}
export type ToMlDsa = { id: number; message: Uint8Array };
export type FromMlDsa = { id: number; signature: Uint8Array } | { id: number; error: string };

const { secretKey } = workerData as MlDsaWorkerData;
const port = parentPort!;

// A checkpoint's signature is background work, and deliveries must not wait for it: on Linux, where a thread's nice
// value is its own, this thread runs at a lower priority (nice 10) than the request loop, so on a busy machine it
// takes mostly time nobody else wants. Elsewhere (or if refused) it runs at the process's priority.
try {
  setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), 10);
} catch {
  // no /proc/thread-self: not Linux
}

port.on('message', ({ id, message }: ToMlDsa) => {
  try {
    const signature = ml_dsa65.sign(message, secretKey);
    port.postMessage({ id, signature } satisfies FromMlDsa, [signature.buffer as ArrayBuffer]);
  } catch (err) {
    port.postMessage({ id, error: (err as Error).message } satisfies FromMlDsa);
  }
});

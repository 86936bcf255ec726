/**
 * The thread behind MlDsaThread (src/audit/ml-dsa-thread.ts): holds the ML-DSA-65 secret key it was started with
 * and signs one message per request, FIPS 204 pure mode with the empty context (as ml-dsa-note.ts). Loaded as
 * CommonJS (see ml-dsa-thread-entry.cjs): no top-level await here.
 */
import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { parentPort, workerData } from 'node:worker_threads';

export interface MlDsaWorkerData {
  secretKey: Uint8Array;
}
export type ToMlDsa = { id: number; message: Uint8Array };
export type FromMlDsa = { id: number; signature: Uint8Array } | { id: number; error: string };

const { secretKey } = workerData as MlDsaWorkerData;
const port = parentPort!;

port.on('message', ({ id, message }: ToMlDsa) => {
  try {
    const signature = ml_dsa65.sign(message, secretKey);
    port.postMessage({ id, signature } satisfies FromMlDsa, [signature.buffer as ArrayBuffer]);
  } catch (err) {
    port.postMessage({ id, error: (err as Error).message } satisfies FromMlDsa);
  }
});

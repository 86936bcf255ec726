import { Worker } from 'node:worker_threads';
import { workerEntry } from '../runtime-paths.js';
import type { FromMlDsa, MlDsaWorkerData, ToMlDsa } from './ml-dsa-thread-worker.js';

const ENTRY = workerEntry(import.meta.url, 'ml-dsa-thread-worker');

/**
 * ML-DSA-65 signatures on a thread of their own. One signature takes about 14 ms of pure JavaScript on this project's
 * 2-core machine; the sealer signs up to two checkpoints a second, and on the request loop each would stall every
 * request in flight for that long. The thread is started on the first signature, holds a copy of the secret key, and
 * is started again if it ever dies (the pending signatures then fail, and the sealer's next pass signs afresh).
 * It keeps the process alive only while a signature is pending; close() ends it.
 */
type Pending = Map<number, { resolve(sig: Buffer): void; reject(err: Error): void }>;

export class MlDsaThread {
  private worker: { thread: Worker; pending: Pending } | undefined;
  private seq = 0;
  private closed = false;

  constructor(private readonly secretKey: Uint8Array) {}

  /** Signs `message`; resolves with the signature (3,309 bytes). Concurrent calls are signed one after the other. */
  sign(message: Buffer): Promise<Buffer> {
    if (this.closed) return Promise.reject(new Error('the ML-DSA signing thread is closed'));
    const { thread, pending } = (this.worker ??= this.start());
    const id = ++this.seq;
    return new Promise<Buffer>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      thread.ref();
      thread.postMessage({ id, message: new Uint8Array(message) } satisfies ToMlDsa);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    await worker?.thread.terminate();
  }

  private start(): { thread: Worker; pending: Pending } {
    // A signature allocates little: a small young generation keeps the thread at about 15 MiB (22 MiB with V8's
    // defaults); the old generation's cap is only a cap. No inherited flags: the entry loads what the thread needs.
    const resourceLimits = { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 128 };
    const thread = new Worker(ENTRY, { workerData: { secretKey: this.secretKey } satisfies MlDsaWorkerData, resourceLimits, execArgv: [] });
    const started = { thread, pending: new Map() as Pending };
    thread.unref();
    thread.on('message', (m: FromMlDsa) => {
      const p = started.pending.get(m.id);
      if (!p) return;
      started.pending.delete(m.id);
      if (started.pending.size === 0) thread.unref();
      if ('signature' in m) p.resolve(Buffer.from(m.signature));
      else p.reject(new Error(`ML-DSA signing failed: ${m.error}`));
    });
    const failAll = (why: string) => {
      if (this.worker === started) this.worker = undefined;
      for (const p of started.pending.values()) p.reject(new Error(why));
      started.pending.clear();
    };
    thread.on('error', (err) => failAll(`the ML-DSA signing thread failed: ${err.message}`));
    thread.on('exit', () => failAll('the ML-DSA signing thread ended'));
    return started;
  }
}

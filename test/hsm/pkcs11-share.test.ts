import { Worker } from 'node:worker_threads';
import t from 'tap';
import { moduleShare } from '../../src/hsm/pkcs11-share.js';

// The turn-taking of threads in one PKCS#11 module (src/hsm/pkcs11-share.ts), with two real threads. A thread inside
// a call that must reinitialize the module (someone finalized it) waits for the share's lock; the thread holding the
// lock may be a finalize waiting for every call to end. Until 2026-12-02 the caller kept its own call counted while
// it waited, and both waited forever (seen as pkcs11.test.ts never ending under load: its outside finalizes during
// bursts of calls).

t.test('a call that reinitializes while a finalize waits for the calls in flight: both finish', async (t) => {
  const share = moduleShare(`/nonexistent/share-test-${process.pid}.so`);
  const control = new SharedArrayBuffer(8);
  const start = (role: string) => new Worker(new URL('./share-thread-entry.cjs', import.meta.url), { workerData: { role, share, control } });
  const threads = [start('caller'), start('finalizer')];
  const finished = threads.map((w) => new Promise<string>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  }));
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    Promise.all(finished).then(() => 'both finished'),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve('deadlocked: neither thread finished in 10 s'), 10_000))),
  ]);
  clearTimeout(timer);
  await Promise.all(threads.map((w) => w.terminate()));
  t.equal(outcome, 'both finished');
  const fields = new Int32Array(share);
  t.same([...fields], [0, 0, 1, 1, 0, 0], 'the lock free, no thread counted in, the module initialized by ours, no call in flight, no writer');
});

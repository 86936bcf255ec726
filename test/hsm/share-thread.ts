// A thread for test/hsm/pkcs11-share.test.ts: plays one role on a module's share (src/hsm/pkcs11-share.ts), stepping
// through a shared control array so that the test can place each role's moves. No PKCS#11 module: the share only
// orders the calls it is given.
import { parentPort, workerData } from 'node:worker_threads';
import { Share } from '../../src/hsm/pkcs11-share.js';

const { role, share, control } = workerData as { role: 'caller' | 'finalizer'; share: SharedArrayBuffer; control: SharedArrayBuffer };
const step = new Int32Array(control);
const at = (n: number) => {
  while (Atomics.load(step, 0) < n) Atomics.wait(step, 0, Atomics.load(step, 0), 50);
};
const go = (n: number) => {
  Atomics.store(step, 0, n);
  Atomics.notify(step, 0);
};

const s = new Share(share);
if (role === 'caller') {
  // In a call (as every worker is while it talks to the module), it meets CKR_CRYPTOKI_NOT_INITIALIZED and
  // reinitializes — while the finalizer holds the share's lock, waiting for the calls in flight to end.
  s.call(() => {
    go(1);
    at(2);
    Atomics.wait(step, 1, 0, 300); // the finalizer is in its wait by now
    s.reinitialize(() => true);
  });
} else {
  at(1);
  go(2);
  s.finalizeFromOutside(() => {});
}
parentPort!.postMessage('done');

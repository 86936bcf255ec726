/**
 * What the threads of this process share about one PKCS#11 module, in a SharedArrayBuffer: who is in it, whether it
 * is initialized and by whom, and which calls are running.
 *
 * A module is initialized once per process, not per thread or per handle: every thread that loads it gets
 * CKR_CRYPTOKI_ALREADY_INITIALIZED after the first, and C_Finalize ends the state of all of them (sessions, login,
 * session objects). PKCS#11 leaves a C_Finalize undefined while another thread is inside a call, and SoftHSM
 * crashes then (seen: "double free", "pure virtual method called"). So:
 * - the threads count themselves in and out (`enter`, `leave`): the last one out finalizes, and only if one of ours
 *   initialized the module (a module that something else initialized is that part's to finalize);
 * - every call runs inside `call` (shared), and C_Initialize/C_Finalize inside `alone` (exclusive): they wait for
 *   the calls in flight, and new calls wait for them. A thread entering a module already initialized does not
 *   wait, so a call stuck in the module never keeps a fresh worker out — it only keeps the module from being
 *   finalized, as it must.
 * Code outside these wrappers that finalizes the module (an outage simulated by a test) must use
 * `finalizeModule`, not a C_Finalize of its own: that would race the calls of every worker thread.
 */
import pkcs11js from 'pkcs11js';

/**
 * Int32 fields: a mutex over the others; threads in; one of ours initialized the module; it is initialized; calls in
 * flight; a C_Initialize or C_Finalize waiting or running.
 */
const [LOCK, USERS, OURS, INIT, READERS, WRITER] = [0, 1, 2, 3, 4, 5];
const shares = new Map<string, SharedArrayBuffer>();

/** The share of a module path; call on the main thread, which hands it to its workers. */
export function moduleShare(path: string): SharedArrayBuffer {
  let share = shares.get(path);
  if (!share) shares.set(path, (share = new SharedArrayBuffer(6 * 4)));
  return share;
}

/** One thread's view of a share. Not for concurrent use within the thread (nothing is, in a thread). */
export class Share {
  private readonly s: Int32Array;
  private depth = 0; // this thread's calls in progress (call() nests)

  constructor(share: SharedArrayBuffer) {
    this.s = new Int32Array(share);
  }

  /** Counts this thread in; runs `initialize` (alone) unless the module is initialized. It says whether it did. */
  enter(initialize: () => boolean): void {
    this.locked(() => {
      if (Atomics.load(this.s, INIT) === 0) this.initialized(this.alone(initialize));
      Atomics.add(this.s, USERS, 1);
    });
  }

  /**
   * After CKR_CRYPTOKI_NOT_INITIALIZED: the module was finalized under us; `initialize` brings it back. Called from
   * inside `call`: this thread's call is set aside before it waits for the lock, since whoever holds the lock may be
   * waiting in `alone` for every call to end (a finalize from outside, or another thread reinitializing), and would
   * wait for this one forever.
   */
  reinitialize(initialize: () => boolean): void {
    this.aside(() => this.locked(() => this.initialized(this.alone(initialize))));
  }

  /** Counts this thread out; the last one out runs `finalize` (alone) if one of ours initialized the module. */
  leave(finalize: () => void): void {
    this.locked(() => {
      if (Atomics.sub(this.s, USERS, 1) !== 1 || Atomics.load(this.s, OURS) === 0) return;
      this.alone(finalize);
      this.finalized();
    });
  }

  /** Runs PKCS#11 calls of this thread: never at the same time as a C_Initialize or C_Finalize. */
  call<T>(fn: () => T): T {
    if (this.depth++ === 0) this.read();
    try { return fn(); } finally { if (--this.depth === 0) this.unread(); }
  }

  /** C_Finalize on behalf of code outside the wrappers, between calls (see finalizeModule). */
  finalizeFromOutside(finalize: () => void): void {
    this.locked(() => {
      this.alone(finalize);
      this.finalized();
    });
  }

  private initialized(ours: boolean): void {
    Atomics.store(this.s, INIT, 1);
    if (ours) Atomics.store(this.s, OURS, 1);
  }

  private finalized(): void {
    Atomics.store(this.s, INIT, 0);
    Atomics.store(this.s, OURS, 0);
  }

  private locked<T>(fn: () => T): T {
    while (Atomics.compareExchange(this.s, LOCK, 0, 1) !== 0) Atomics.wait(this.s, LOCK, 1, 20);
    try { return fn(); } finally { Atomics.store(this.s, LOCK, 0); Atomics.notify(this.s, LOCK, 1); }
  }

  /** Runs `fn` with this thread's call in progress, if any, set aside (not counted in flight), and resumes it after. */
  private aside<T>(fn: () => T): T {
    const depth = this.depth;
    if (depth === 0) return fn();
    this.depth = 0;
    this.unread();
    try { return fn(); } finally { this.read(); this.depth = depth; }
  }

  /** Runs `fn` with no call in flight (this thread's own call, if any, set aside). Only under `locked`. */
  private alone<T>(fn: () => T): T {
    return this.aside(() => {
      Atomics.store(this.s, WRITER, 1);
      try {
        for (let n; (n = Atomics.load(this.s, READERS)) !== 0;) Atomics.wait(this.s, READERS, n);
        return fn();
      } finally {
        Atomics.store(this.s, WRITER, 0);
        Atomics.notify(this.s, WRITER);
      }
    });
  }

  private read(): void {
    for (;;) {
      while (Atomics.load(this.s, WRITER) === 1) Atomics.wait(this.s, WRITER, 1);
      Atomics.add(this.s, READERS, 1);
      if (Atomics.load(this.s, WRITER) === 0) return;
      this.unread(); // a C_Initialize/C_Finalize came in between: let it go first
    }
  }

  private unread(): void {
    if (Atomics.sub(this.s, READERS, 1) === 1 && Atomics.load(this.s, WRITER) === 1) Atomics.notify(this.s, READERS);
  }
}

/**
 * Ends the module's state for the whole process, as a C_Finalize through a second handle would, but only once no
 * call is in flight in any of our threads: for tests and tools that simulate an HSM outage. The wrappers notice on
 * their next call and initialize the module again. Blocks the calling thread while a call is stuck in the module.
 */
export function finalizeModule(path: string): void {
  const p11 = new pkcs11js.PKCS11();
  p11.load(path);
  try {
    new Share(moduleShare(path)).finalizeFromOutside(() => {
      try { p11.C_Initialize(); } catch (e) {
        if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
      }
      p11.C_Finalize();
    });
  } finally {
    p11.close();
  }
}

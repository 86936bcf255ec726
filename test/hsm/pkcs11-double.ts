// A test double in front of the real SoftHSM module, for the faults SoftHSM cannot produce: a call that hangs, and a
// device fault reported as CKR_GENERAL_ERROR (the only CKR_GENERAL_ERROR SoftHSM gives on decrypt is a bad tag).
// Everything else — sessions, login, keys, the cryptography — is the real module.
//
// The wrapper's worker thread imports this file (Pkcs11Options.testHook) and calls wrapPkcs11 on its module handle;
// the test steers it from the main thread through a SharedArrayBuffer, since the worker's double lives in another
// thread. A held call blocks the worker thread itself (Atomics.wait) until the test releases it, just as a call
// stuck inside a native module would; nothing in the wrapper can tell the two apart.
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';

type Op = 'encrypt' | 'decrypt';
const OPS: Record<Op, number> = { encrypt: 0, decrypt: 1 };
const ERRORS = ['CKR_GENERAL_ERROR', 'CKR_ENCRYPTED_DATA_INVALID'] as const;
// Int32 slots: per op [error (0 none, 1 + index into ERRORS), times left (-1: every call), held (0/1)], the gate
// (held calls wait while it is 0), the number of calls logged, then the log: [op, session handle] per call.
const FAULT = (op: Op) => OPS[op] * 3;
const GATE = 6;
const COUNT = 7;
const LOG = 8;
const MAX_CALLS = 4096;

/** A fault for the next `times` calls of its kind (default: all). With `error`, the real call runs (a failing C_Decrypt
 * ends its operation, as PKCS#11 says) and then reports that error. With `held`, the call waits before it runs
 * until `release()`. */
export type Fault = { error?: (typeof ERRORS)[number]; held?: boolean; times?: number };

/** The test's side. `hook` goes into Pkcs11Options.testHook. */
export class Pkcs11Double {
  readonly shared = new SharedArrayBuffer((LOG + 2 * MAX_CALLS) * 4);
  private readonly slots = new Int32Array(this.shared);
  readonly hook = { module: new URL('./pkcs11-double.ts', import.meta.url).href, data: this.shared };

  fault(op: Op, f: Fault | undefined): void {
    const at = FAULT(op);
    Atomics.store(this.slots, at + 1, f?.times ?? -1);
    Atomics.store(this.slots, at + 2, f?.held ? 1 : 0);
    Atomics.store(this.slots, at, f?.error ? 1 + ERRORS.indexOf(f.error) : f?.held ? 0 : -1);
    if (f?.held) Atomics.store(this.slots, GATE, 0);
  }

  /** Lets every held call run, now and from now on (until a new held fault). */
  release(): void {
    Atomics.store(this.slots, GATE, 1);
    Atomics.notify(this.slots, GATE);
  }

  /** The encrypt and decrypt calls that reached the module, in order, with their session handles. */
  calls(): Array<{ op: Op; session: Buffer }> {
    const n = Math.min(Atomics.load(this.slots, COUNT), MAX_CALLS);
    return Array.from({ length: n }, (_, i) => {
      const session = Buffer.alloc(8);
      session.writeUInt32LE(Atomics.load(this.slots, LOG + 2 * i + 1));
      return { op: Atomics.load(this.slots, LOG + 2 * i) === 0 ? 'encrypt' : 'decrypt', session };
    });
  }

  clearCalls(): void {
    Atomics.store(this.slots, COUNT, 0);
  }
}

/** The thread's side: the real module behind a proxy that logs and faults C_Encrypt and C_Decrypt. */
export function wrapPkcs11(p11: PKCS11, shared: SharedArrayBuffer): PKCS11 {
  const slots = new Int32Array(shared);
  const due = (op: Op, session: Buffer) => {
    const i = Atomics.add(slots, COUNT, 1);
    if (i < MAX_CALLS) {
      Atomics.store(slots, LOG + 2 * i, OPS[op]);
      Atomics.store(slots, LOG + 2 * i + 1, session.readUInt32LE(0));
    }
    const at = FAULT(op);
    const kind = Atomics.load(slots, at);
    if (kind === -1 || Atomics.load(slots, at + 1) === 0) return undefined;
    if (Atomics.load(slots, at + 1) > 0) Atomics.sub(slots, at + 1, 1);
    return { error: kind > 0 ? ERRORS[kind - 1] : undefined, held: Atomics.load(slots, at + 2) === 1 };
  };
  return new Proxy(p11, {
    get(target, name) {
      const v = Reflect.get(target, name) as (...args: unknown[]) => unknown;
      const op: Op | undefined = name === 'C_Encrypt' ? 'encrypt' : name === 'C_Decrypt' ? 'decrypt' : undefined;
      if (!op) return typeof v === 'function' ? v.bind(target) : v;
      return (session: Buffer, ...rest: unknown[]) => {
        const f = due(op, session);
        if (f?.held) while (Atomics.load(slots, GATE) === 0) Atomics.wait(slots, GATE, 0);
        const out = v.call(target, session, ...rest);
        if (f?.error) throw new pkcs11js.Pkcs11Error(`${f.error}:${pkcs11js[f.error]}`, pkcs11js[f.error], name as string);
        return out;
      };
    },
  });
}

/**
 * The wire format between the wrapper and its worker thread: many calls in one message each way.
 *
 * The bytes travel in shared memory, not in the messages: each lane owns an arena (a SharedArrayBuffer) cut into
 * SLOTS slots, and a batch is written into a free slot — its calls' descriptors and inputs, then room for their
 * outputs — so a message only names the slot. (Transferring ArrayBuffers instead costs ~8 µs per buffer on the dev
 * VM, more than the rest of a call's overhead; copying them through postMessage would leave copies of plaintexts in
 * memory nobody wipes.) The only copies of a plaintext are ones we own and wipe: the caller's bytes are copied
 * when the call is made (a caller may reuse its buffer as soon as encrypt returns its promise) and wiped once in the
 * slot; the worker wipes a slot's inputs when the batch is done; the main thread wipes the slot once every caller
 * has its own copy of its output. A call too large for a slot travels alone in an arena of its own.
 *
 * Slot layout: IN Int32 request fields per call, OUT Int32 answer fields per call, then the inputs, then the outputs.
 */
import type { MessagePort } from 'node:worker_threads';
import { HsmUnavailableError, IntegrityError } from './key-wrapper.js';
import { IV_BYTES, TAG_BYTES } from './pkcs11-engine.js';
import type { Target } from './pkcs11-module.js';

export const ENCRYPT = 1;
export const DECRYPT = 2;
export const SLOTS = 8;
export const SLOT_BYTES = 128 * 1024;
/** Calls per batch at most: small enough that the first callers of a large burst hear back early. */
export const BATCH = 256;
/** Request fields per call: op, kekVersion, data offset/length, aad offset/length, iv offset (offsets in the slot). */
const IN = 7;
/** Answer fields per call: status, kekVersion, output offset, output length. */
const OUT = 4;
const [OK, INTEGRITY, UNAVAILABLE, FAILED] = [0, 1, 2, 3];

export interface WorkerData {
  target: Omit<Target, 'pinDigest'>;
  share: SharedArrayBuffer;
  control: SharedArrayBuffer;
  arena: SharedArrayBuffer;
  /** The lane's channel: a port of its own, so that the lane can read queued answers synchronously. */
  port: MessagePort;
  mayCreate: boolean;
  /** Test seam: a module whose `wrapPkcs11(p11, data)` returns the PKCS11 object this thread works on. */
  testHook?: { module: string; data?: unknown };
}
/** Where a batch lives: `size` bytes from `at` in a slot of the lane's arena, or (`own`) in an arena of its own. */
export interface Place { at: number; size: number; own?: SharedArrayBuffer }
/** Messages from the main thread. */
export type ToWorker = { t: 'batch'; id: number; place: Place; n: number } | { t: 'close'; logout: boolean };
/** Messages to the main thread; `errors` lists the calls that failed, with their messages. */
export type FromWorker =
  | { t: 'booted' }
  | { t: 'ready'; current: number; versions: number[]; model: string }
  | { t: 'failed'; message: string }
  | { t: 'done'; id: number; current: number; errors?: Array<[number, string]> }
  | { t: 'log'; level: 'info' | 'warn' | 'error'; fields: Record<string, unknown>; msg: string };

/** Fields of `control`: the stamp (BigInt64, ms since the epoch), then the ABANDONED flag (Int32). */
export const STAMP = 0;
export const ABANDONED = 2;

/** A call as the wrapper holds it until it is sent: its inputs copied into one buffer of its own (data, aad, iv). */
export interface Pending { op: number; version: number; input: Buffer; dataLen: number; aadLen: number }

export function pending(op: number, version: number, data: Uint8Array, aad: Uint8Array, iv?: Uint8Array): Pending {
  const input = Buffer.alloc(data.byteLength + aad.byteLength + (iv?.byteLength ?? 0));
  input.set(data, 0);
  input.set(aad, data.byteLength);
  if (iv) input.set(iv, data.byteLength + aad.byteLength);
  return { op, version, input, dataLen: data.byteLength, aadLen: aad.byteLength };
}

const align = (n: number) => (n + 7) & ~7;
const outBytes = (p: Pending) => (p.op === ENCRYPT ? IV_BYTES + p.dataLen + TAG_BYTES : p.dataLen);
/** Bytes a batch of `calls` needs in a slot. */
export const batchBytes = (calls: Pending[]) =>
  calls.reduce((sum, p) => sum + (IN + OUT) * 4 + align(p.input.length) + align(outBytes(p)), 0);

/** Writes `calls` into `place` of `arena` and wipes their own copies of the inputs. */
export function writeBatch(arena: SharedArrayBuffer, place: Place, calls: Pending[]): void {
  const meta = new Int32Array(arena, place.at, calls.length * IN);
  new Int32Array(arena, place.at + calls.length * IN * 4, calls.length * OUT).fill(FAILED); // until answered
  const bytes = new Uint8Array(arena, place.at, place.size);
  let at = calls.length * (IN + OUT) * 4;
  calls.forEach((p, i) => {
    const m = i * IN;
    meta.set([p.op, p.version, at, p.dataLen, at + p.dataLen, p.aadLen, at + p.dataLen + p.aadLen], m);
    bytes.set(p.input, at);
    p.input.fill(0);
    at += align(p.input.length);
  });
}

/** The worker's side: runs the `n` calls of a batch through the given functions, writes the answers, wipes the inputs. */
export function runBatch(arena: SharedArrayBuffer, place: Place, n: number, run: {
  encrypt(plaintext: Buffer, aad: Buffer, iv: Buffer, out: Buffer): number;
  decrypt(version: number, iv: Buffer, ciphertext: Buffer, aad: Buffer, out: Buffer): number;
  /** Asked before each call: false stops the batch, whose answer nobody waits for any more. */
  proceed(): boolean;
}): Array<[number, string]> | undefined {
  const m = new Int32Array(arena, place.at, n * IN);
  const answer = new Int32Array(arena, place.at + n * IN * 4, n * OUT);
  const view = (off: number, len: number) => Buffer.from(arena, place.at + off, len);
  let out = n * (IN + OUT) * 4;
  for (let i = 0; i < n; i++) out += align(m[i * IN + 3]! + m[i * IN + 5]! + (m[i * IN] === DECRYPT ? IV_BYTES : 0));
  const inputs = view(n * (IN + OUT) * 4, out - n * (IN + OUT) * 4);
  const errors: Array<[number, string]> = [];
  let answered = false;
  try {
    for (let i = 0; i < n; i++) {
      if (!run.proceed()) return undefined;
      const [op, version, dataOff, dataLen, aadOff, aadLen, ivOff] = [m[i * IN]!, m[i * IN + 1]!, m[i * IN + 2]!,
        m[i * IN + 3]!, m[i * IN + 4]!, m[i * IN + 5]!, m[i * IN + 6]!];
      const data = view(dataOff, dataLen);
      const aad = view(aadOff, aadLen);
      const room = op === ENCRYPT ? IV_BYTES + dataLen + TAG_BYTES : dataLen;
      answer[i * OUT + 2] = out;
      try {
        if (op === ENCRYPT) {
          answer[i * OUT + 1] = run.encrypt(data, aad, view(out, IV_BYTES), view(out + IV_BYTES, room - IV_BYTES));
          answer[i * OUT + 3] = room;
        } else {
          answer[i * OUT + 1] = version;
          answer[i * OUT + 3] = run.decrypt(version, view(ivOff, IV_BYTES), data, aad, view(out, room));
        }
        answer[i * OUT] = OK;
      } catch (e) {
        answer[i * OUT] = e instanceof IntegrityError ? INTEGRITY : e instanceof HsmUnavailableError ? UNAVAILABLE : FAILED;
        errors.push([i, e instanceof Error ? e.message : String(e)]);
      }
      out += align(room);
    }
    answered = true;
    return errors;
  } finally {
    inputs.fill(0);
    if (!answered) view(0, place.size).fill(0);
  }
}

/** What one call gets back: an encrypt its version, IV and ciphertext, a decrypt its plaintext. */
export type Outcome = { version: number; iv: Buffer; ciphertext: Buffer } | Buffer | Error;

/**
 * The main thread's side: one outcome per call (`ops[i]` says what call i was), each in buffers of its own, never
 * the shared pool, so that a caller can wipe its plaintext and nothing else lives beside it. Then wipes the slot.
 */
export function readAnswer(arena: SharedArrayBuffer, place: Place, ops: number[], errors: Array<[number, string]> = [],
): Outcome[] {
  const n = ops.length;
  const answer = new Int32Array(arena, place.at + n * IN * 4, n * OUT);
  const bytes = new Uint8Array(arena, place.at, place.size);
  const failed = new Map(errors);
  const copy = (off: number, len: number) => {
    const b = Buffer.alloc(len);
    b.set(bytes.subarray(off, off + len));
    return b;
  };
  const outcomes = ops.map((op, i): Outcome => {
    const [status, version, off, len] = [answer[i * OUT]!, answer[i * OUT + 1]!, answer[i * OUT + 2]!, answer[i * OUT + 3]!];
    if (status !== OK || failed.has(i)) {
      const message = failed.get(i) ?? `no answer for call ${i}`;
      if (status === INTEGRITY) return new IntegrityError(message);
      return status === UNAVAILABLE ? new HsmUnavailableError(message) : new Error(message);
    }
    if (op === DECRYPT) return copy(off, len);
    return { version, iv: copy(off, IV_BYTES), ciphertext: copy(off + IV_BYTES, len - IV_BYTES) };
  });
  bytes.fill(0);
  return outcomes;
}

/**
 * One PKCS#11 worker thread and its session, seen from the main thread: batches in, answers out, and the deadline.
 *
 * Deadline. The worker stamps the time before each PKCS#11 call. While anything is out (the opening, a batch, the
 * closing), a timer checks that neither the call in progress nor a batch the worker has not started yet is older
 * than `timeoutMs`; so a batch may take longer than that in all, as long as no single call does. Before it gives up,
 * the timer reads the answers already queued, so that a main thread that was itself late cannot fail calls the
 * worker answered in time.
 *
 * Past the deadline the lane is abandoned for good: every call out on it gets HsmUnavailableError, and the worker is
 * never sent anything again — its session may be mid-operation, and the thread may be stuck inside the module, where
 * nothing can interrupt it (terminate() only stops JavaScript). It is told, through shared memory, to close its
 * session and end when it comes back. `unref()` keeps it from holding the event loop open, but Node still joins
 * every worker thread when the process exits (process.exit() included), so a process with a thread stuck in the
 * module cannot exit until the call returns: only a signal (SIGKILL) stops it then. The wrapper logs this on close.
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { workerEntry } from '../runtime-paths.js';
import { HsmUnavailableError } from './key-wrapper.js';
import type { Log } from './pkcs11-engine.js';
import {
  ABANDONED, BATCH, batchBytes, readAnswer, SLOT_BYTES, SLOTS, STAMP, writeBatch,
  type FromWorker, type Outcome, type Pending, type Place, type ToWorker, type WorkerData,
} from './pkcs11-batch.js';

/** A call waiting for its outcome. */
export interface Call { p: Pending; settle(outcome: Outcome): void }
export interface LaneEvents {
  ready(info: { current: number; versions: number[]; model: string }): void;
  /** Opening failed (the worker's own words), or the thread died: the lane is gone. */
  failed(err: Error): void;
  /** A call ran past its deadline: the lane is abandoned. */
  stalled(): void;
  /** The thread ended; `abandoned` says whether it was a stalled one coming back. */
  exited(abandoned: boolean): void;
  current(version: number): void;
  /** A slot came free: calls still queued can go now. */
  room(): void;
  log: Log;
}

const ENTRY = workerEntry(import.meta.url, 'pkcs11-worker');

export class Lane {
  state: 'starting' | 'ready' | 'closing' | 'abandoned' | 'ended' = 'starting';
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly stamps: BigInt64Array;
  private readonly flags: Int32Array;
  private readonly arena = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
  private readonly free = Array.from({ length: SLOTS }, (_, i) => i);
  private readonly out = new Map<number, { since: number; calls: Call[]; place: Place; slot?: number }>();
  private since: number | undefined; // when the opening or the closing began (once the thread runs)
  private readonly orphans: SharedArrayBuffer[] = []; // own arenas of batches failed while the thread may still write
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private waiters: Array<() => boolean> = [];

  constructor(
    data: Omit<WorkerData, 'control' | 'port' | 'arena'>,
    private readonly timeoutMs: number,
    private readonly token: string,
    private readonly on: LaneEvents,
  ) {
    const control = new SharedArrayBuffer(16);
    this.stamps = new BigInt64Array(control, 0, 1);
    this.flags = new Int32Array(control);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    // execArgv []: the entry registers the TypeScript loader itself; inherited loaders (a test runner's) only cost time.
    const workerData: WorkerData = { ...data, control, port: port2, arena: this.arena };
    this.worker = new Worker(ENTRY, { workerData, transferList: [port2], execArgv: [] });
    this.port.on('message', (m: FromWorker) => this.receive(m));
    this.worker.on('error', (e) => this.died(`its thread failed: ${e.message}`));
    this.worker.on('exit', () => this.died('its thread ended'));
  }

  /** Sends the calls at the head of `queue` (removing them), as many batches as there are free slots. Only while ready. */
  pump(queue: Call[]): void {
    while (queue.length > 0 && this.state === 'ready') {
      let [n, size] = [0, 0];
      for (let more; n < queue.length && n < BATCH && size + (more = batchBytes([queue[n]!.p])) <= SLOT_BYTES; n++) size += more;
      if (n === 0) { // too large for a slot: an arena of its own
        size = batchBytes([queue[0]!.p]);
        this.send(queue.splice(0, 1), { at: 0, size, own: new SharedArrayBuffer(size) });
        continue;
      }
      const slot = this.free.pop();
      if (slot === undefined) return; // the next answer frees one (room)
      this.send(queue.splice(0, n), { at: slot * SLOT_BYTES, size }, slot);
    }
  }

  private send(calls: Call[], place: Place, slot?: number): void {
    writeBatch(place.own ?? this.arena, place, calls.map((c) => c.p));
    const id = ++this.seq;
    this.out.set(id, { since: Date.now(), calls, place, slot });
    this.tell({ t: 'batch', id, place, n: calls.length });
    this.busy(true);
    this.watch();
  }

  /** Lets the batches out finish (or time out), then has the worker log out if told, close its session and end. */
  async close(logout: boolean): Promise<void> {
    await this.until(() => this.state !== 'starting' && this.out.size === 0);
    if (this.state !== 'ready') return;
    this.state = 'closing';
    this.since = Date.now();
    this.tell({ t: 'close', logout });
    this.busy(true);
    this.watch();
    await this.until(() => this.state !== 'closing');
  }

  private tell(m: ToWorker): void {
    this.port.postMessage(m);
  }

  private receive(m: FromWorker): void {
    if (!this.live()) return; // an abandoned worker's answers: its arena is wiped when the thread has ended
    switch (m.t) {
      case 'booted':
        this.since = Date.now(); // the deadline covers the module from here on, not the loading of JavaScript
        this.watch();
        break;
      case 'ready':
        this.state = 'ready';
        this.since = undefined;
        this.busy(this.out.size > 0);
        this.on.ready(m);
        break;
      case 'failed': // the worker ends itself
        this.state = 'ended';
        this.since = undefined;
        this.busy(false);
        this.port.close();
        this.on.failed(new Error(m.message));
        break;
      case 'done': {
        const batch = this.out.get(m.id)!;
        this.out.delete(m.id);
        this.on.current(m.current);
        const outcomes = readAnswer(batch.place.own ?? this.arena, batch.place, batch.calls.map((c) => c.p.op), m.errors);
        if (batch.slot !== undefined) this.free.push(batch.slot);
        batch.calls.forEach((c, i) => c.settle(outcomes[i]!));
        this.busy(this.out.size > 0 || this.state === 'closing');
        this.on.room();
        break;
      }
      case 'log':
        this.on.log(m.level, m.fields, m.msg);
        break;
    }
    this.wake();
  }

  /** Arms the deadline while anything is out; past it, reads what is queued and then gives up on the worker. */
  private watch(): void {
    if (this.timer || !this.live()) return;
    const oldest = this.out.values().next().value?.since ?? this.since;
    if (oldest === undefined) return;
    const left = Math.max(Number(Atomics.load(this.stamps, STAMP)), oldest) + this.timeoutMs - Date.now();
    if (left > 0) {
      // Unref'd: while anything is out, the worker and its port keep the process alive.
      this.timer = setTimeout(() => { this.timer = undefined; this.watch(); }, left).unref();
      return;
    }
    let read = false;
    for (let m; this.live() && (m = receiveMessageOnPort(this.port)); read = true) this.receive(m.message as FromWorker);
    if (read) this.watch(); // judge again with what the answers changed
    else if (this.live() && (this.out.size > 0 || this.since !== undefined)) this.abandon();
  }

  private live(): boolean {
    return this.state !== 'abandoned' && this.state !== 'ended';
  }

  private abandon(): void {
    const starting = this.state === 'starting';
    this.state = 'abandoned';
    Atomics.store(this.flags, ABANDONED, 1); // read before each call: a thread stuck in one stops at the next
    this.tell({ t: 'close', logout: false }); // and one that was not stuck after all (only slow to start) ends now
    clearTimeout(this.timer);
    this.busy(false); // for good: see the file comment for what unref does and does not do
    const fields = { token: this.token, timeoutMs: this.timeoutMs };
    this.on.log('error', fields, 'PKCS#11 call timed out; its worker thread is abandoned');
    const err = new HsmUnavailableError(`PKCS#11 ${this.token} did not answer within ${this.timeoutMs} ms`);
    this.failAll(err);
    if (starting) this.on.failed(err);
    this.on.stalled();
    this.wake();
  }

  private died(why: string): void {
    if (this.state === 'abandoned') {
      this.state = 'ended';
      this.port.close();
      for (const a of [this.arena, ...this.orphans.splice(0)]) new Uint8Array(a).fill(0); // what late calls wrote
      this.on.exited(true);
      return;
    }
    // The thread's last words may still wait behind its exit: a worker that cannot open posts why, then ends, and
    // the exit event can come first (seen on Node 24 under load). Read them, so the caller learns the real reason.
    for (let m; this.live() && (m = receiveMessageOnPort(this.port)); ) this.receive(m.message as FromWorker);
    if (this.state === 'ended') return;
    const was = this.state;
    this.state = 'ended';
    clearTimeout(this.timer);
    this.port.close();
    const err = new HsmUnavailableError(`PKCS#11 worker for ${this.token} is gone: ${why}`);
    this.failAll(err);
    if (was === 'starting') this.on.failed(err);
    else if (was !== 'closing') this.on.log('error', { token: this.token, err: why }, 'PKCS#11 worker thread died');
    this.on.exited(false);
    this.wake();
  }

  private failAll(err: Error): void {
    for (const batch of this.out.values()) {
      batch.calls.forEach((c) => c.settle(err));
      if (batch.place.own) this.orphans.push(batch.place.own);
    }
    this.out.clear();
    if (this.state !== 'ended') return; // abandoned: the thread may still write; wiped when it has ended
    for (const a of [this.arena, ...this.orphans.splice(0)]) new Uint8Array(a).fill(0);
  }

  /** A lane that waits for its worker keeps the process alive; an idle one does not. */
  private busy(on: boolean): void {
    if (on) { this.worker.ref(); this.port.ref(); } else { this.worker.unref(); this.port.unref(); }
  }

  private until(done: () => boolean): Promise<void> {
    return done() ? Promise.resolve() : new Promise((resolve) => this.waiters.push(() => done() && (resolve(), true)));
  }

  private wake(): void {
    this.waiters = this.waiters.filter((w) => !w());
  }
}

/**
 * Group commit in the application. A commit is the expensive part of a delivery (a WAL flush), so requests that
 * arrive while earlier transactions are in flight share the next one: one transaction, one commit, one answer each.
 * With no contention a request runs alone at once, so this adds no latency; under load it multiplies throughput.
 *
 * Requests queue per key (a material link, or one queue for all); at most `maxInFlight` batches run per key, each of
 * at most `maxWeight` (a request heavier than that runs alone). Bounded: at most `maxQueued` requests wait per key
 * (more are refused at once with `full()`), and a request still queued at its deadline, or whose client went away,
 * is rejected with `timedOut()` and takes nothing.
 *
 * `run` owns the batch from then on: it must settle every request of it (resolve or reject), and must not throw.
 */
export interface Pending<R, A> {
  request: R;
  resolve: (answer: A) => void;
  reject: (err: unknown) => void;
}

export interface GroupCommitOptions<R, A> {
  maxInFlight: number;
  maxQueued: number;
  maxWeight: number;
  weight: (r: R) => number;
  /** Epoch ms past which the request gets `timedOut()` (even while a transaction is stuck on a stalled database). */
  deadline: (r: R) => number;
  /** True once the client went away: it is dropped from the queue. */
  abandoned?: (r: R) => boolean;
  run: (key: string, batch: Array<Pending<R, A>>) => Promise<void>;
  full: (key: string) => Error;
  timedOut: () => Error;
}

export class GroupCommitQueue<R, A> {
  private readonly queues = new Map<string, Array<Pending<R, A>>>();
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly opts: GroupCommitOptions<R, A>) {}

  submit(key: string, request: R): Promise<A> {
    const queue = this.queues.get(key) ?? [];
    if (queue.length >= this.opts.maxQueued) return Promise.reject(this.opts.full(key));
    return new Promise((resolve, reject) => {
      // The deadline holds even while a transaction is stuck: the client gets its answer then. A transaction that
      // gets through afterwards must find the deadline passed before its COMMIT and roll back (the caller's run).
      const timer = setTimeout(() => reject(this.opts.timedOut()), Math.max(0, this.opts.deadline(request) - Date.now()));
      queue.push({
        request,
        resolve: (answer) => (clearTimeout(timer), resolve(answer)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      this.queues.set(key, queue);
      this.pump(key);
    });
  }

  private pump(key: string): void {
    const queue = this.queues.get(key);
    while (queue && queue.length > 0 && (this.inFlight.get(key) ?? 0) < this.opts.maxInFlight) {
      const batch: Array<Pending<R, A>> = [];
      let weight = 0;
      const now = Date.now();
      while (queue.length > 0) {
        const next = queue[0]!;
        if (this.opts.deadline(next.request) <= now || this.opts.abandoned?.(next.request)) {
          queue.shift();
          next.reject(this.opts.timedOut());
          continue;
        }
        const w = this.opts.weight(next.request);
        if (batch.length > 0 && weight + w > this.opts.maxWeight) break;
        batch.push(queue.shift()!);
        weight += w;
      }
      if (batch.length === 0) break;
      this.inFlight.set(key, (this.inFlight.get(key) ?? 0) + 1);
      void this.opts.run(key, batch).finally(() => {
        this.inFlight.set(key, (this.inFlight.get(key) ?? 1) - 1);
        this.pump(key);
      });
    }
  }
}

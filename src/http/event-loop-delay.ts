import { monitorEventLoopDelay } from 'node:perf_hooks';

const RESOLUTION_MS = 10;

/**
 * The mean event-loop delay over the last sample period, in ms. Why not @fastify/under-pressure's own measure: it
 * takes a period with no sample as an infinite delay, and on Node 24 an idle loop records no sample in a second, so
 * an idle KME shed the first requests after every quiet second. A loop that was blocked records the long delay
 * when it runs again; no sample means it was idle: no delay.
 */
export class EventLoopDelay {
  private readonly histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  private readonly timer: NodeJS.Timeout;
  private last = 0;

  constructor(sampleMs = 1_000) {
    this.histogram.enable();
    this.timer = setInterval(() => {
      const mean = this.histogram.mean;
      this.last = Number.isNaN(mean) ? 0 : Math.max(0, mean / 1e6 - RESOLUTION_MS);
      this.histogram.reset();
    }, sampleMs).unref();
  }

  get ms(): number {
    return this.last;
  }

  stop(): void {
    clearInterval(this.timer);
    this.histogram.disable();
  }
}

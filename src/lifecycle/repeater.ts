/**
 * Runs one step of a background job again and again until stopped: the step says how long to wait before the next
 * one (0: go on at once), `kick()` cuts a wait short, and `stop()` waits for a step in progress to finish. Steps never
 * overlap. A step that throws is the job's business: it should catch, log and return a back-off delay.
 */
export class Repeater {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private kicked = false;

  constructor(private readonly step: () => Promise<number>) {}

  start(delayMs = 0): void {
    this.stopped = false;
    this.schedule(delayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Run the next step now (or right after the one in progress). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.kicked = true;
      return;
    }
    clearTimeout(this.timer);
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.step().then(
        (delay) => {
          this.running = undefined;
          const next = this.kicked ? 0 : delay;
          this.kicked = false;
          this.schedule(next);
        },
        () => {
          this.running = undefined;
          this.schedule(1_000);
        },
      );
    }, delayMs);
  }
}

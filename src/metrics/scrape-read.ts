/**
 * A read that the collectors of one scrape share (prom-client asks every metric at once): the first collector
 * starts it, the others get the same answer for `reuseMs`. It gives up after `timeoutMs`, so that a database that
 * hangs makes a scrape short of some figures rather than a scrape that never ends; `undefined` then, and the
 * failure is kept for `lastError`.
 */
export class ScrapeRead<T> {
  private last: { at: number; value: Promise<T | undefined> } | undefined;
  /** Why the last read gave nothing, or undefined when it succeeded. */
  lastError: string | undefined;

  constructor(
    private readonly read: () => Promise<T>,
    private readonly opts: { timeoutMs: number; reuseMs: number } = { timeoutMs: 1_000, reuseMs: 1_000 },
  ) {}

  get(): Promise<T | undefined> {
    if (!this.last || Date.now() - this.last.at >= this.opts.reuseMs) this.last = { at: Date.now(), value: this.readOnce() };
    return this.last.value;
  }

  private async readOnce(): Promise<T | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs)));
    try {
      const value = await Promise.race([this.read(), late]);
      this.lastError = undefined;
      return value;
    } catch (err) {
      this.lastError = (err as Error).message;
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }
}

import type { Logger } from '../log.js';
import { Repeater } from './repeater.js';

/**
 * Starts a background job on a Repeater: `step` runs every `everyMs` (or after the delay it returns), never
 * overlapping itself. A failing step is logged once when the failure starts and once when the job recovers, not on
 * every pass, and is tried again after `everyMs`. Returns the job's stop function.
 */
export function startBackgroundJob(opts: {
  /** What the job does, for its log lines: "key expiry" gives "key expiry failing; retrying". */
  what: string;
  log: Logger;
  everyMs: number;
  firstMs?: number;
  /** One pass; may return how long to wait before the next (a backlog goes on sooner). */
  step: () => Promise<number | void>;
  /** For a leader-only job: whether this replica leads now (a pass is skipped when not). */
  leads?: () => Promise<boolean>;
}): () => Promise<void> {
  let failing = false;
  const loop = new Repeater(async () => {
    try {
      const delay = opts.leads && !(await opts.leads()) ? undefined : await opts.step();
      if (failing) opts.log.info(`${opts.what} resumed`);
      failing = false;
      return delay ?? opts.everyMs;
    } catch (err) {
      if (!failing) opts.log.warn({ err: { message: (err as Error).message } }, `${opts.what} failing; retrying`);
      failing = true;
      return opts.everyMs;
    }
  });
  loop.start(opts.firstMs ?? opts.everyMs);
  return () => loop.stop();
}

import type { Logger } from '../log.js';
import { startBackgroundJob } from './background-job.js';
import { LeaderLock } from './leader-lock.js';

/**
 * Runs a long-lived job (a link's ingest) on one replica at a time: every `everyMs` this replica asks for the job's
 * Postgres advisory lock; it starts the job when it gets the lock and stops it when it loses it (its database
 * connection ended). When the leading replica dies its connection closes, the server frees the lock, and another
 * replica starts the job within about `everyMs`. Resolves once the first answer is in (so a replica that leads has
 * started the job when it is ready), with the stop (the job, the watch and the lock).
 */
export async function runWhileLeading(opts: {
  databaseUrl: string;
  /** The lock's name: one job, one name, per database. */
  job: string;
  everyMs: number;
  start: () => void | Promise<void>;
  stop: () => Promise<void>;
  log: Logger;
}): Promise<() => Promise<void>> {
  const lock = new LeaderLock(opts.databaseUrl, opts.job, opts.log);
  let running = false;
  const step = async () => {
    const leads = await lock.lead().catch(() => false);
    if (leads && !running) {
      await opts.start();
      running = true;
    } else if (!leads && running) {
      running = false;
      await opts.stop();
    }
  };
  // A first failure (the database away at start) is the watch's to retry, not a reason to refuse to start.
  await step().catch((err: Error) => opts.log.warn({ job: opts.job, err: { message: err.message } }, 'could not start a leader-only job yet; retrying'));
  const watch = startBackgroundJob({ what: `leadership of ${opts.job}`, log: opts.log, everyMs: opts.everyMs, step });
  return async () => {
    await watch();
    if (running) await opts.stop();
    running = false;
    await lock.close();
  };
}

import type { Config } from '../config/schema.js';
import { startBackgroundJob } from '../lifecycle/background-job.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { loadPrincipals, principalsStamp, seedPrincipals } from '../store/principals.js';
import { principalsOfConfig } from './config-principals.js';
import { Principals } from './principals.js';

/**
 * The live registry of one KME process: the table of principals (src/store/principals.ts) seeded from the config
 * file at start, and its in-memory image (`principals`) that requests consult. A change this process makes is in
 * the image at once (`reload`); a change made elsewhere (another replica, `kms` against the database) within
 * `everyMs`, by polling a cheap stamp of the table. Redis invalidation across replicas is the coordinator's job
 * (issue 15); the poll bounds the delay without it.
 */
export class PrincipalRegistry {
  readonly principals = new Principals();
  private stamp = '';

  private constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  /** Seeds the table from the config and loads it. */
  static async open(db: Db, config: Config, log: Logger): Promise<PrincipalRegistry> {
    const registry = new PrincipalRegistry(db, log);
    await seedPrincipals(db, principalsOfConfig(config), { actor: `kme:${config.kme_id}` });
    await registry.reload();
    return registry;
  }

  /** Reads the table again and swaps in its image. */
  async reload(): Promise<void> {
    const stamp = await principalsStamp(this.db);
    this.principals.replace(await loadPrincipals(this.db));
    this.stamp = stamp;
  }

  /** Watches the table every `everyMs`; returns the stop. */
  start(everyMs: number): () => Promise<void> {
    return startBackgroundJob({
      what: 'watching the registry of principals',
      log: this.log,
      everyMs,
      step: async () => {
        if ((await principalsStamp(this.db)) !== this.stamp) await this.reload();
      },
    });
  }
}

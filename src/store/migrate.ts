import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import type { Logger } from '../log.js';

/** migrations/ at the project root: numbered plain SQL files, applied in order, each in its own transaction. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

/**
 * Applies every pending migration. Safe to run from several replicas at once: node-pg-migrate takes an advisory
 * lock, and records each applied file in `pgmigrations` inside the migration's own transaction.
 * Returns the names of the migrations applied by this call.
 */
export async function migrate(url: string, log: Logger): Promise<string[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const applied = await runner({
      dbClient: client,
      dir: MIGRATIONS_DIR,
      direction: 'up',
      migrationsTable: 'pgmigrations',
      checkOrder: true,
      log: () => undefined, // node-pg-migrate prints every SQL statement; we log the summary instead
    });
    const names = applied.map((m) => m.name);
    log.info({ applied: names }, names.length ? 'database migrations applied' : 'database schema is up to date');
    return names;
  } finally {
    await client.end();
  }
}

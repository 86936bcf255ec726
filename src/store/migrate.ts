import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log.js';
import { PROJECT_ROOT } from '../runtime-paths.js';

/** migrations/ at the project root: numbered plain SQL files, applied in order, each in its own transaction. */
export const MIGRATIONS_DIR = join(PROJECT_ROOT, 'migrations');

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
      // Replicas started together wait for the first to finish (its default, 'fail', made the others exit at start).
      advisoryLockMode: 'wait',
      log: () => undefined, // node-pg-migrate prints every SQL statement; we log the summary instead
    });
    const names = applied.map((m) => m.name);
    log.info({ applied: names }, names.length ? 'database migrations applied' : 'database schema is up to date');
    return names;
  } finally {
    await client.end();
  }
}

/**
 * For a KME that connects with a role that may not migrate (config database.app_role): refuses to start on a schema
 * that lacks a migration of this version, naming the first one and the command that applies it.
 */
export async function checkSchema(url: string): Promise<void> {
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    let applied: Set<string>;
    try {
      applied = new Set((await client.query<{ name: string }>('SELECT name FROM pgmigrations')).rows.map((r) => r.name));
    } catch (err) {
      throw new ConfigError(`cannot read the applied migrations (${(err as Error).message}): run \`kms migrate --config FILE\` as the database owner first`);
    }
    const missing = files.filter((f) => !applied.has(f));
    if (missing.length > 0) {
      throw new ConfigError(`the database schema is behind this KME: ${missing.length} migration(s) not applied, first ${missing[0]}; run \`kms migrate --config FILE\` as the database owner`);
    }
  } finally {
    await client.end();
  }
}

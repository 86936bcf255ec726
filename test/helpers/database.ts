import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createLogger, type Logger } from '../../src/log.js';
import { createDb, type Db } from '../../src/store/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/store/embedded-postgres.js';
import { migrate } from '../../src/store/migrate.js';

/**
 * A database of its own for each call: a fresh database on the real PostgreSQL named by DATABASE_URL (what CI
 * runs), or, when DATABASE_URL is not set, on one embedded PostgreSQL server per test process (started on first
 * use, stopped when the process exits). `kind` says which, so tests can print it.
 */
export interface TestDatabase {
  url: string;
  kind: 'postgres' | 'embedded';
  drop(): Promise<void>;
}

export async function freshDatabase(): Promise<TestDatabase> {
  const admin = process.env.DATABASE_URL;
  return admin ? freshPostgres(admin) : freshEmbedded();
}

async function freshPostgres(adminUrl: string): Promise<TestDatabase> {
  const name = `kms_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    kind: 'postgres',
    drop: async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** A fresh database with every migration applied and the KME's own pool on it; `close` ends the pool and drops it. */
export interface MigratedDatabase extends TestDatabase {
  db: Db;
  close(): Promise<void>;
}

export async function migratedDatabase(opts: { poolSize?: number; log?: Logger } = {}): Promise<MigratedDatabase> {
  const tdb = await freshDatabase();
  const log = opts.log ?? createLogger({ level: 'silent' });
  await migrate(tdb.url, log);
  const db = createDb({ url: tdb.url, poolSize: opts.poolSize ?? 2, log });
  return {
    ...tdb,
    db,
    close: async () => {
      await db.end();
      await tdb.drop();
    },
  };
}

let embedded: Promise<EmbeddedPostgres> | undefined;

async function freshEmbedded(): Promise<TestDatabase> {
  // The server does not keep the process alive and src/store/embedded-postgres.ts stops it at exit, so no
  // teardown is needed here; a failed start is not cached, so the next call tries again.
  embedded ??= startEmbeddedPostgres().catch((err: unknown) => {
    embedded = undefined;
    throw err;
  });
  const db = await freshPostgres((await embedded).adminUrl);
  return { ...db, kind: 'embedded' };
}

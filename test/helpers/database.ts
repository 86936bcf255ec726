import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/store/embedded-postgres.js';

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

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/store/embedded-postgres.js';

/**
 * A database of its own for one test file: a fresh database on the real PostgreSQL named by DATABASE_URL
 * (what CI runs), or an embedded PGlite served over the wire protocol when DATABASE_URL is not set.
 * `kind` says which, so tests can print it.
 */
export interface TestDatabase {
  url: string;
  kind: 'postgres' | 'pglite';
  drop(): Promise<void>;
}

export async function freshDatabase(): Promise<TestDatabase> {
  const admin = process.env.DATABASE_URL;
  return admin ? freshPostgres(admin) : freshPglite();
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

async function freshPglite(): Promise<TestDatabase> {
  const pg = await startEmbeddedPostgres();
  return { url: pg.url, kind: 'pglite', drop: pg.stop };
}

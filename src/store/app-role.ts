import pg from 'pg';
import type { Logger } from '../log.js';
import { ConfigError } from '../config/load.js';

/** The custody log's tables: the application may read and append, never change or remove. */
export const APPEND_ONLY_TABLES = ['audit_event', 'audit_seal', 'audit_signing_key', 'audit_signing_key_seal', 'audit_cosignature'];
/** Written only by `kms audit prune`, as the owner: the KME may read it. */
export const OWNER_ONLY_TABLES = ['audit_prune'];

/**
 * Gives the KME's own database role what it needs and no more (run by `kms migrate`, as the role that owns the
 * tables): read and write the pool's tables; only SELECT and INSERT on the custody log's; only SELECT on the record
 * of prunings and the list of applied migrations. Not being the tables' owner, the role can neither disable their triggers nor alter them, so the
 * append-only rule holds even if the KME itself is taken over; the database's owner and superusers still can, which
 * is what the sealed, signed checkpoints are for. Creates the role (LOGIN, no password: set one, or a certificate,
 * as the site's pg_hba.conf wants) when it does not exist. Idempotent: every `kms migrate` grants again, so tables
 * of new migrations are covered.
 */
export async function grantAppRole(client: pg.ClientBase, role: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(role)) {
    throw new ConfigError(`/database/app_role: "${role}" must be a plain lowercase role name (letters, digits, _)`);
  }
  const { rows: me } = await client.query<{ r: string }>('SELECT current_user AS r');
  if (me[0]!.r === role) throw new ConfigError(`/database/app_role: ${role} is the role running the migrations; the KME needs a role of its own`);
  const { rows: exists } = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
  if (exists.length === 0) await client.query(`CREATE ROLE ${role} LOGIN`);
  const { rows: tables } = await client.query<{ t: string }>(
    `SELECT tablename AS t FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'pgmigrations'`,
  );
  const appendOnly = tables.map((r) => r.t).filter((t) => APPEND_ONLY_TABLES.includes(t));
  const ownerOnly = tables.map((r) => r.t).filter((t) => OWNER_ONLY_TABLES.includes(t));
  const others = tables.map((r) => r.t).filter((t) => !APPEND_ONLY_TABLES.includes(t) && !OWNER_ONLY_TABLES.includes(t));
  const ns = await schema(client);
  await client.query(`GRANT USAGE ON SCHEMA ${ns} TO ${role}`);
  if (others.length) await client.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${others.join(', ')} TO ${role}`);
  await client.query(`REVOKE ALL ON ${appendOnly.join(', ')} FROM ${role}`);
  await client.query(`GRANT SELECT, INSERT ON ${appendOnly.join(', ')} TO ${role}`);
  if (ownerOnly.length) {
    await client.query(`REVOKE ALL ON ${ownerOnly.join(', ')} FROM ${role}`);
    await client.query(`GRANT SELECT ON ${ownerOnly.join(', ')} TO ${role}`);
  }
  await client.query(`GRANT SELECT ON pgmigrations TO ${role}`);
  await client.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${ns} TO ${role}`);
}

async function schema(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ s: string }>('SELECT quote_ident(current_schema()) AS s');
  return rows[0]!.s;
}

/** grantAppRole on a connection of its own, as the owner at `url`. */
export async function grantAppRoleAt(url: string, role: string, log: Logger): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query('BEGIN');
    await grantAppRole(client, role);
    await client.query('COMMIT');
    log.info({ role }, "granted the KME's role its privileges: SELECT and INSERT only on the custody log");
  } finally {
    await client.end();
  }
}

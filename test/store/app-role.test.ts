import t from 'tap';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { grantAppRoleAt } from '../../src/store/app-role.js';
import { migrate } from '../../src/store/migrate.js';
import { lastSeal } from '../../src/store/seals.js';
import { eventually } from '../helpers/etsi.js';
import { capturingLogger } from '../helpers/logs.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 12 item 2: the KME connects with a role of its own that `kms migrate` set up (src/store/app-role.ts): it
// delivers keys and seals the log as before, but can only read and append to the custody log — the database, not
// the application, refuses UPDATE, DELETE, TRUNCATE, disabling the append-only triggers and skipping them.

const role = `kms_app_${process.pid}_${randomBytes(3).toString('hex')}`;
const { log } = capturingLogger();
let k: TestKms;
let owner: pg.Client;
let app: pg.Client;
let adminUrl: string;

t.before(async () => {
  k = await startTestKms({
    appRole: role,
    keys: { max_key_count: 100 },
    databaseUrl: async (url) => {
      adminUrl = url;
      await migrate(url, log);
      await grantAppRoleAt(url, role, log);
      await grantAppRoleAt(url, role, log); // again, as every `kms migrate` does: idempotent
      const u = new URL(url);
      if (u.password) {
        // The embedded server (no DATABASE_URL) wants a password: give the role the one its URL will carry.
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        await c.query(`ALTER ROLE ${role} PASSWORD '${decodeURIComponent(u.password).replace(/'/g, "''")}'`);
        await c.end();
      }
      u.username = role;
      return u.toString();
    },
  });
  owner = new pg.Client({ connectionString: adminUrl });
  app = new pg.Client({ connectionString: k.kms.db.options.connectionString });
  await Promise.all([owner.connect(), app.connect()]);
});
t.teardown(async () => {
  await app?.end();
  await owner?.end();
  await k?.close();
  const server = new URL(adminUrl);
  server.pathname = '/postgres'; // the test's database is gone; roles belong to the server
  const c = new pg.Client({ connectionString: server.toString() });
  await c.connect();
  await c.query(`DROP ROLE IF EXISTS ${role}`);
  await c.end();
});

t.test('the KME runs as its own role: keys delivered, the log sealed', async (t) => {
  t.equal((await app.query('SELECT current_user AS u')).rows[0].u, role);
  const enc = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  t.equal(enc.status, 200);
  const id = (enc.body as { keys: Array<{ key_ID: string }> }).keys[0]!.key_ID;
  t.equal((await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`)).status, 200);
  const { rows } = await owner.query<{ max: string }>('SELECT max(seq) AS max FROM audit_event');
  await eventually(async () => {
    await k.kms.sealer.sealOnce();
    if (((await lastSeal(owner))?.treeSize ?? 0) < Number(rows[0]!.max)) throw new Error('not sealed yet');
  }, 10_000);
  t.pass('every event sealed by the sealer running as the KME role');
});

t.test('the role cannot rewrite the custody log, even by going around the triggers', async (t) => {
  for (const sql of [
    'UPDATE audit_event SET outcome = outcome',
    'DELETE FROM audit_event',
    'TRUNCATE audit_event',
    'UPDATE audit_seal SET checkpoint = checkpoint',
    'DELETE FROM audit_seal',
    'DELETE FROM audit_signing_key',
    'ALTER TABLE audit_event DISABLE TRIGGER USER',
    'DROP TABLE audit_event',
    `SET session_replication_role = replica`,
  ]) {
    await t.rejects(app.query(sql), { code: '42501' }, sql);
  }
  await app.query(`SET qkms.pruning = 'on'`); // what `kms audit prune` says as the owner
  await t.rejects(app.query('DELETE FROM audit_event'), { code: '42501' }, 'pruning is not for the KME role either');
  await t.rejects(app.query(`INSERT INTO audit_prune (up_to_size, archive_sha256, events) VALUES (1, 'x', 0)`), { code: '42501' }, 'nor recording a pruning');
  await app.query(`RESET qkms.pruning`);
  t.equal((await app.query(`SELECT count(*)::int AS n FROM audit_event`)).rows[0].n > 0, true, 'it may read the log');
});

t.test("the role moves the custody index's pending entries through the migrations' function, not by itself", async (t) => {
  await t.rejects(app.query(`SELECT gin_clean_pending_list('audit_event_key_ids'::regclass)`), { code: '42501' }, 'the index is not its own');
  const { rows } = await app.query('SELECT qkms_flush_custody_index()::int AS pages');
  t.ok(rows[0].pages >= 0, `the function runs as its owner (${rows[0].pages} page(s) moved)`);
});

t.test("the role refreshes the pool tables' statistics through the migrations' function, not by itself", async (t) => {
  const notices: string[] = [];
  const onNotice = (n: { message?: string }) => notices.push(n.message ?? '');
  app.on('notice', onNotice);
  try {
    await app.query('ANALYZE pool_count');
  } finally {
    app.off('notice', onNotice);
  }
  // PostgreSQL 15's wording, then 16's and later's (the embedded server).
  t.match(notices.join('\n'), /skipping "pool_count" --- only table or database owner can analyze it|permission denied to analyze "pool_count", skipping it/,
    'a bare ANALYZE is skipped: the table is not its own');
  // A threshold of 0 rows: every table of the function's list, whatever this KME holds.
  const { rows } = await app.query<{ names: string[] }>('SELECT qkms_refresh_statistics(0) AS names');
  t.same(rows[0]!.names, ['erase_queue', 'key_chunk', 'pool_count', 'qkd_key'], 'the function analyzes the four pool tables');
  const { rows: stats } = await owner.query<{ relname: string }>(
    `SELECT relname FROM pg_stat_user_tables WHERE relname = ANY ($1) AND last_analyze IS NOT NULL ORDER BY relname`,
    [rows[0]!.names],
  );
  t.same(stats.map((r) => r.relname), rows[0]!.names, 'and PostgreSQL records each as analyzed');
});

t.test('a KME whose role may not migrate refuses a schema that is behind, and says what to run', async (t) => {
  const { rows } = await owner.query<{ name: string }>(`DELETE FROM pgmigrations WHERE name = (SELECT max(name) FROM pgmigrations) RETURNING name`);
  try {
    const other = await startTestKms({ appRole: role, fill: false, databaseUrl: () => k.kms.db.options.connectionString! }).catch((e: Error) => e);
    t.match(other, { message: /schema is behind this KME: 1 migration\(s\) not applied, first \d{4}_\w+; run `kms migrate --config FILE`/ });
  } finally {
    await owner.query(`INSERT INTO pgmigrations (name, run_on) VALUES ($1, now())`, [rows[0]!.name]);
  }
});

// Set-up of the real parts the benchmark drives: a fresh PostgreSQL database, a throwaway SoftHSM2 token, a
// development PKI, and the two servers as child processes. Everything created registers its own undo step.
import { eraseLag } from './erasure.js';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createSoftHsmToken, type SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import { ensureDemoPki, type DemoPki } from '../src/pki/dev-pki.js';
import { startChild, waitForLine, type Child } from './children.js';
import { onCleanup } from './cleanup.js';
import { JsonClient, type Identity } from './client.js';
import { kmeMemory } from './memory.js';
import { KME_NODE_ARGS } from './settings.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function tempRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kms-bench-'));
  onCleanup(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A database of the benchmark's own on the machine's PostgreSQL, dropped at the end (even mid-run). */
export async function createDatabase(adminUrl: string): Promise<string> {
  const name = `kms_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  onCleanup(`drop database ${name}`, async () => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    try {
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); // FORCE: a killed KME may leave sessions
    } finally {
      await c.end();
    }
  });
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export function createToken(root: string): SoftHsmToken {
  const token = createSoftHsmToken(join(root, 'hsm'), { label: 'kms-bench' });
  if ('skip' in token) throw new Error(token.skip);
  return token;
}

/** KME_B serves the single-KME phases (and lends its certificate to the reference); the network adds KME_A, KME_C. */
export function createPki(root: string): Promise<DemoPki> {
  return ensureDemoPki(join(root, 'pki'), { kmeIds: ['KME_A', 'KME_B', 'KME_C'], saeIds: ['SAE_A', 'SAE_B', 'SAE_C'], strangerIds: [] });
}

export const identity = (pki: DemoPki, sae: string): Identity => ({ ...pki.saes[sae]!, ca: pki.ca });

export { serverPort } from '../src/ports.js';

export interface KmeSettings {
  port: number;
  rateBitsPerSecond: number;
  maxKeyCount: number;
  dbPoolSize?: number;
  /**
   * The link's max_blocks_per_batch (blocks one ingest step stores): 2000 when not given, as the bench has always
   * configured it; null leaves it out, so the KME's own default applies.
   */
  maxBlocksPerBatch?: number | null;
  /** audit.seal_every_ms (the KME's default, 500, when not given). */
  sealEveryMs?: number;
  /**
   * Given: a replica of a KME — coordination through Redis (its URL from KMS_REDIS_URL, see startKme), its keys and
   * channel under this prefix. Absent: the in-process coordinator of a lone KME.
   */
  redisKeyPrefix?: string;
}

export function writeKmeConfig(root: string, pki: DemoPki, token: SoftHsmToken, s: KmeSettings): string {
  const kme = pki.kmes.KME_B!;
  const config = {
    kme_id: 'KME_B',
    listen: { host: '127.0.0.1', port: s.port },
    tls: { cert: kme.cert, key: kme.key, ca: pki.ca },
    ...(s.dbPoolSize ? { database: { pool_size: s.dbPoolSize } } : {}),
    hsm: { type: 'pkcs11', module: token.module, token_label: token.tokenLabel, create_key_if_missing: true },
    saes: [{ id: 'SAE_A' }, { id: 'SAE_B' }],
    keys: { key_size: 256, max_key_count: s.maxKeyCount },
    ...(s.sealEveryMs ? { audit: { seal_every_ms: s.sealEveryMs } } : {}),
    ...(s.redisKeyPrefix ? { coordination: { redis: { url_env: 'KMS_REDIS_URL', key_prefix: s.redisKeyPrefix } } } : {}),
    // One loopback link (no peer_kme_id): SAE_A and SAE_B are both at this KME.
    links: [
      {
        link_id: 'KME_B-loopback',
        ...(s.maxBlocksPerBatch === null ? {} : { max_blocks_per_batch: s.maxBlocksPerBatch ?? 2000 }),
        source: { type: 'simulator', rate_bits_per_second: s.rateBitsPerSecond },
      },
    ],
  };
  // Named by everything that differs between starts: two KMEs on different databases, or the same one restarted
  // with another cap, never read each other's file.
  const batch = s.maxBlocksPerBatch === null ? 'default' : (s.maxBlocksPerBatch ?? 2000);
  const path = join(root, `kme-${s.port}-${s.rateBitsPerSecond}-${s.maxKeyCount}-${batch}-${s.sealEveryMs ?? 'seal'}.json`);
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

/**
 * Starts the KME as `kms serve` in a child process and waits until GET status answers 200 (`statusPath`, by
 * default SAE_B's status, asked as `who`). `nodeArgs` lets a run add e.g. --cpu-prof; `name` labels it.
 */
export async function startKme(
  configPath: string,
  env: { databaseUrl: string; token: SoftHsmToken; redisUrl?: string },
  port: number,
  who: Identity,
  nodeArgs: string[] = [],
  opts: { name?: string; statusPath?: string } = {},
): Promise<Child> {
  const name = opts.name ?? 'KME';
  const child = startChild(
    name,
    [...KME_NODE_ARGS, ...nodeArgs, 'bin/kms.js', 'serve', '--config', configPath], // the compiled code, as production runs it
    {
      ...process.env,
      SOFTHSM2_CONF: env.token.conf,
      KMS_DATABASE_URL: env.databaseUrl,
      KMS_HSM_PIN: env.token.pin,
      KMS_LOG_LEVEL: process.env.BENCH_KME_LOG_LEVEL ?? 'warn',
      ...(env.redisUrl ? { KMS_REDIS_URL: env.redisUrl } : {}),
    },
    REPO,
  );
  onCleanup(`stop the ${name}`, child.stop);
  kmeMemory.track(child);
  eraseLag.track(env.databaseUrl);
  const client = new JsonClient(`https://127.0.0.1:${port}`, who);
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.proc.exitCode !== null) {
        throw new Error(`the ${name} exited (code ${child.proc.exitCode}):\n${child.lines.slice(-20).join('\n')}`);
      }
      const ok = await client.call('GET', opts.statusPath ?? '/api/v1/keys/SAE_B/status').then((r) => r.status === 200, () => false);
      if (ok) return child;
      if (Date.now() > deadline) throw new Error(`the ${name} did not answer within 60 s:\n${child.lines.slice(-20).join('\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    client.close();
  }
}

export async function startReference(pki: DemoPki): Promise<{ child: Child; url: string }> {
  const kme = pki.kmes.KME_B!;
  const child = startChild(
    'reference',
    ['--import', 'tsx', 'bench/reference-server.ts'],
    { ...process.env, REF_CERT: kme.cert, REF_KEY: kme.key, REF_CA: pki.ca },
    REPO,
  );
  onCleanup('stop the reference server', child.stop);
  const port = await waitForLine(child, (l) => /^REF_LISTENING (\d+)$/.exec(l)?.[1], 30_000);
  return { child, url: `https://127.0.0.1:${port}` };
}

/**
 * Whether autovacuum runs on this server (CI configs often turn it off; then tables are never analyzed and the
 * planner works from empty statistics), and, when asked, an explicit ANALYZE as autovacuum would eventually do.
 */
export async function databaseFacts(url: string, analyze: boolean): Promise<{ autovacuum: string; analyzed: boolean }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query('SHOW autovacuum');
    if (analyze) await c.query('ANALYZE');
    return { autovacuum: (rows[0] as { autovacuum: string }).autovacuum, analyzed: analyze };
  } finally {
    await c.end();
  }
}

/** Blocks a link's primary stored but has not announced to the secondary yet (unusable until it has). */
export async function unannouncedBlocks(url: string, linkId: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query('SELECT COALESCE(sum(blocks), 0)::bigint::text AS n FROM link_ref WHERE link_id = $1 AND NOT announced', [linkId]);
    return Number((rows[0] as { n: string }).n);
  } finally {
    await c.end();
  }
}

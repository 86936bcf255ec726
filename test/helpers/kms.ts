import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { KeyWrapper } from '../../src/hsm/key-wrapper.js';
import { createLogger } from '../../src/log.js';
import { ensureDemoPki, type DemoPki } from '../../src/pki/dev-pki.js';
import { startKms, type RunningKms } from '../../src/server.js';
import { createMockKeyWrapper, type MockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { EtsiClient } from './client.js';
import { freshDatabase, type TestDatabase } from './database.js';

export const SAES = ['SAE_A', 'SAE_B', 'SAE_C', 'SAE_D'] as const;

export interface TestKms {
  kms: RunningKms;
  db: TestDatabase;
  pki: DemoPki;
  /** Folder of the test PKI (ca.crt, ca.key), for tests that issue more certificates. */
  pkiDir: string;
  config: Config;
  wrapper: KeyWrapper;
  /** Everything the KME logged, for tests that search logs for key material. */
  logs: () => string;
  /** A keep-alive client with the certificate of a registered SAE (or a stranger's). */
  client: (sae: string) => EtsiClient;
  close: () => Promise<void>;
}

/** One shared PKI per test process: issuing certificates is the slow part of starting a test KME. */
let sharedPki: Promise<{ dir: string; pki: DemoPki }> | undefined;
function testPki() {
  sharedPki ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kms-test-pki-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return { dir, pki: await ensureDemoPki(dir, { kmeIds: ['KME_T'], saeIds: [...SAES], strangerIds: ['SAE_X'] }) };
  })();
  return sharedPki;
}

/**
 * Starts a real KME (real TLS socket on 127.0.0.1, real database) with a simulated link.
 * By default the pool is pre-filled to `max_key_count` before returning, so tests start from a known state.
 */
export async function startTestKms(
  opts: {
    keys?: Partial<Config['keys']>;
    rate?: number;
    wrapper?: KeyWrapper;
    /**
     * What the KME connects to instead of the fresh test database: a URL, or a function of the fresh database's
     * URL (e.g. a TCP proxy in front of it), so that `db` stays the database the KME really uses.
     */
    databaseUrl?: string | ((freshDbUrl: string) => string | Promise<string>);
    fill?: boolean;
    requests?: Partial<Config['requests']>;
    /** The registered SAEs, when a test needs certificate_cn or certificate_sha256; default SAES by ID. */
    saes?: Array<{ id: string; certificate_cn?: string; certificate_sha256?: string }>;
  } = {},
): Promise<TestKms & { mock?: MockKeyWrapper }> {
  const { pki, dir: pkiDir } = await testPki();
  const db = await freshDatabase();
  const captured: string[] = [];
  const log = createLogger(
    { level: 'debug' },
    new Writable({
      write(chunk, _enc, done) {
        captured.push(String(chunk));
        done();
      },
    }),
  );
  const config = parseConfig({
    kme_id: 'KME_T',
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: pki.kmes.KME_T!.cert, key: pki.kmes.KME_T!.key, ca: pki.ca },
    database: { pool_size: 8 },
    hsm: { type: 'mock' },
    saes: opts.saes ?? SAES.map((id) => ({ id })),
    keys: { max_key_count: 2000, ...opts.keys },
    requests: opts.requests ?? {},
    links: [{ link_id: 'KME_T-loopback', source: { type: 'simulator', rate_bits_per_second: opts.rate ?? 50_000_000 } }],
  });
  const mock = opts.wrapper ? undefined : createMockKeyWrapper();
  const wrapper = opts.wrapper ?? mock!;
  const databaseUrl = typeof opts.databaseUrl === 'function' ? await opts.databaseUrl(db.url) : (opts.databaseUrl ?? db.url);
  const kms = await startKms(config, { log, databaseUrl, wrapper });
  if (opts.fill !== false) await waitForPool(kms, config.keys.max_key_count);
  const clients: EtsiClient[] = [];
  const identities = { ...pki.saes, ...pki.strangers };
  return {
    kms,
    db,
    pki,
    pkiDir,
    config,
    wrapper,
    mock,
    logs: () => captured.join(''),
    client: (sae) => {
      const c = new EtsiClient(kms.url, pki.ca, identities[sae]);
      clients.push(c);
      return c;
    },
    close: async () => {
      clients.forEach((c) => c.close());
      await kms.close();
      await db.drop();
    },
  };
}

/** Waits until the pool holds `blocks` available blocks (the simulator fills it quickly in tests). */
export async function waitForPool(kms: RunningKms, blocks: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await kms.db.query('SELECT COALESCE(sum(available), 0)::int AS n FROM pool_count');
    if ((rows[0] as { n: number }).n >= blocks) return;
    if (Date.now() > deadline) throw new Error(`pool did not reach ${blocks} blocks`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

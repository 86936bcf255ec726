import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { KeyWrapper } from '../../src/hsm/key-wrapper.js';
import { ensureDemoPki, type DemoPki } from '../../src/pki/dev-pki.js';
import { startKms, type RunningKms } from '../../src/server.js';
import { createMockKeyWrapper, type MockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { createSoftHsmToken, type SoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { EtsiClient } from './client.js';
import { capturingLogger } from './logs.js';
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
  /** A keep-alive client with the certificate of a registered SAE (or a stranger's, the auditor AUDITOR_1's or the operator OPERATOR_1's). */
  client: (sae: string) => EtsiClient;
  close: () => Promise<void>;
}

/** One shared PKI per test process: issuing certificates is the slow part of starting a test KME. */
let sharedPki: Promise<{ dir: string; pki: DemoPki }> | undefined;
function testPki() {
  sharedPki ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kms-test-pki-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return { dir, pki: await ensureDemoPki(dir, { kmeIds: ['KME_T'], saeIds: [...SAES], strangerIds: ['SAE_X'], auditorIds: ['AUDITOR_1'], operatorIds: ['OPERATOR_1'] }) };
  })();
  return sharedPki;
}

/** What a test KME wraps its keys with: hsm-mock (software KEK in memory) or a real SoftHSM2 token via PKCS#11. */
export type TestHsm = 'mock' | 'softhsm';

/** The HSM a test KME uses unless the test says otherwise: `KMS_TEST_HSM` ('mock' or 'softhsm'), else 'mock'. */
export function testHsm(): TestHsm {
  const v = process.env.KMS_TEST_HSM || 'mock';
  if (v !== 'mock' && v !== 'softhsm') throw new Error(`KMS_TEST_HSM must be 'mock' or 'softhsm', not '${v}'`);
  return v;
}

/** The environment variable the SoftHSM test KMEs read their PIN from (config `hsm.pin_env`). */
const SOFTHSM_PIN_ENV = 'KMS_TEST_SOFTHSM_PIN';
let sharedToken: SoftHsmToken | { skip: string } | undefined;

/**
 * ONE throwaway SoftHSM2 token per test process, in a temp dir removed at exit; `{ skip }` says why there is none.
 * SoftHSM reads SOFTHSM2_CONF once, at C_Initialize: this runs before the first wrapper loads the module (the first
 * call creates the token and points SOFTHSM2_CONF at it), and every KME of the process uses this one token.
 */
export function testSoftHsm(): SoftHsmToken | { skip: string } {
  if (!sharedToken) {
    const dir = mkdtempSync(join(tmpdir(), 'kms-test-softhsm-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    sharedToken = createSoftHsmToken(dir, { label: 'kms-test' });
    if (!('skip' in sharedToken)) process.env[SOFTHSM_PIN_ENV] = sharedToken.pin;
  }
  return sharedToken;
}

/** Why `hsm` cannot run on this machine (SoftHSM2 not installed), or undefined when it can. */
export function hsmSkipReason(hsm: TestHsm = testHsm()): string | undefined {
  if (hsm === 'mock') return undefined;
  const token = testSoftHsm();
  return 'skip' in token ? token.skip : undefined;
}

function softHsmToken(): SoftHsmToken {
  const token = testSoftHsm();
  // Variant files check hsmSkipReason first and report a skip; getting here means SoftHSM was asked for explicitly.
  if ('skip' in token) throw new Error(`SoftHSM2 asked for (KMS_TEST_HSM=softhsm or hsm: 'softhsm') but unavailable: ${token.skip}`);
  return token;
}

let kekCount = 0;
/** A KEK label no other KME of this process uses: KMEs on the shared token share a KEK only when a test says so. */
export function freshKekLabel(): string {
  return `kek-${++kekCount}`;
}

/** The `hsm` config of a KME on the process's SoftHSM2 token (KEK generated on first use). */
function softHsmConfig(keyLabel = freshKekLabel()) {
  const token = softHsmToken();
  return {
    type: 'pkcs11' as const,
    module: token.module,
    token_label: token.tokenLabel,
    key_label: keyLabel,
    create_key_if_missing: true,
    pin_env: SOFTHSM_PIN_ENV,
  };
}

/**
 * Starts a real KME (real TLS socket on 127.0.0.1, real database) with a simulated link.
 * By default the pool is pre-filled to `max_key_count` before returning, so tests start from a known state.
 * The KME wraps its keys with `opts.wrapper` when given, else with `opts.hsm` (default: testHsm()): hsm-mock, or a
 * PKCS#11 wrapper on the process's SoftHSM2 token that the KME opens from its config, as in production.
 */
export async function startTestKms(
  opts: {
    keys?: Partial<Config['keys']>;
    rate?: number;
    wrapper?: KeyWrapper;
    /** Without `wrapper`: hsm-mock or SoftHSM2; default testHsm() (`KMS_TEST_HSM`, else 'mock'). */
    hsm?: TestHsm;
    /** On SoftHSM: the KEK label, for KMEs that should share a KEK; default a label of this KME's own. */
    kekLabel?: string;
    /**
     * What the KME connects to instead of the fresh test database: a URL, or a function of the fresh database's
     * URL (e.g. a TCP proxy in front of it), so that `db` stays the database the KME really uses.
     */
    databaseUrl?: string | ((freshDbUrl: string) => string | Promise<string>);
    /** config database.app_role: the KME checks the schema instead of migrating (the test migrates and grants). */
    appRole?: string;
    fill?: boolean;
    requests?: Partial<Config['requests']>;
    admin?: Partial<Config['admin']>;
    policies?: Config['policies'];
    /** How soon after a KEK rotation an old version may be destroyed (the KME's default: 60 s). */
    kekGraceMs?: number;
    /** Other TLS files than the shared test PKI's (a test that rotates them works on copies). */
    tls?: Partial<Config['tls']>;
    /** The ops listener (liveness, readiness); none by default. */
    ops?: Config['ops'];
    /** The listener's time limits (config `listen`), when a test needs them short. */
    listen?: Partial<Omit<Config['listen'], 'host' | 'port'>>;
    /** The registered SAEs, when a test needs certificate_cn or certificate_sha256; default SAES by ID. */
    saes?: Array<{ id: string; certificate_cn?: string; certificate_sha256?: string }>;
    /** What replicas share (config `coordination`): Redis, for tests of replicas; in-process by default. */
    coordination?: Config['coordination'];
    /** The Cisco SKIP listener (TLS-PSK); none by default. PSK file paths must be absolute. */
    skip?: Record<string, unknown>;
  } = {},
): Promise<TestKms & { mock?: MockKeyWrapper }> {
  const hsm = opts.hsm ?? testHsm();
  const { pki, dir: pkiDir } = await testPki();
  const db = await freshDatabase();
  const { log, text: logs } = capturingLogger();
  const config = parseConfig({
    kme_id: 'KME_T',
    listen: { host: '127.0.0.1', port: 0, ...opts.listen },
    ...(opts.ops ? { ops: opts.ops } : {}),
    ...(opts.skip ? { skip: opts.skip } : {}),
    ...(opts.coordination ? { coordination: opts.coordination } : {}),
    tls: { cert: pki.kmes.KME_T!.cert, key: pki.kmes.KME_T!.key, ca: pki.ca, ...opts.tls },
    database: { pool_size: 8, ...(opts.appRole ? { app_role: opts.appRole } : {}) },
    hsm: !opts.wrapper && hsm === 'softhsm' ? softHsmConfig(opts.kekLabel) : { type: 'mock' },
    saes: opts.saes ?? SAES.map((id) => ({ id })),
    auditors: [{ id: 'AUDITOR_1' }],
    operators: [{ id: 'OPERATOR_1' }],
    keys: { max_key_count: 2000, ...opts.keys },
    requests: opts.requests ?? {},
    admin: opts.admin ?? {},
    policies: opts.policies ?? [],
    links: [{ link_id: 'KME_T-loopback', source: { type: 'simulator', rate_bits_per_second: opts.rate ?? 50_000_000 } }],
  });
  // On SoftHSM no wrapper is passed: startKms opens the PKCS#11 wrapper from config.hsm (and closes it on close).
  const mock = opts.wrapper || hsm === 'softhsm' ? undefined : createMockKeyWrapper();
  const databaseUrl = typeof opts.databaseUrl === 'function' ? await opts.databaseUrl(db.url) : (opts.databaseUrl ?? db.url);
  let kms: Awaited<ReturnType<typeof startKms>>;
  try {
    kms = await startKms(config, { log, databaseUrl, wrapper: opts.wrapper ?? mock, ...(opts.kekGraceMs !== undefined ? { kekGraceMs: opts.kekGraceMs } : {}) });
  } catch (err) {
    await db.drop(); // a KME that would not start (some tests want that) leaves no database behind
    throw err;
  }
  const wrapper = kms.wrapper;
  if (opts.fill !== false) await waitForPool(kms, config.keys.max_key_count);
  const clients: EtsiClient[] = [];
  const identities = { ...pki.saes, ...pki.strangers, ...pki.auditors, ...pki.operators };
  return {
    kms,
    db,
    pki,
    pkiDir,
    config,
    wrapper,
    mock,
    logs,
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

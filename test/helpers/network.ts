import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { networkConfigs, type NetworkSpec } from '../../src/config/network-builder.js';
import type { Config } from '../../src/config/schema.js';
import { ensureDemoPki, type DemoPki } from '../../src/pki/dev-pki.js';
import { startKms, type RunningKms } from '../../src/server.js';
import { serverPort } from '../../src/ports.js';
import { SimulatedDevice } from '../../src/sources/simulator.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { createMockSigningKey } from '../../hsm-mock/mock-signing-key.js';
import { EtsiClient } from './client.js';
import { capturingLogger } from './logs.js';
import { freshDatabase, type TestDatabase } from './database.js';
import { TcpProxy } from './tcp-proxy.js';
import pg from 'pg';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { runKms, waitFor, type KmsProcess } from './process.js';

/**
 * A network of real KMEs for tests: each with its own database (on the PostgreSQL of DATABASE_URL, or the embedded
 * one), its own port, hsm-mock, simulated links with seeds shared by both ends, and a TCP proxy on every
 * KME-to-KME connection so that tests can cut, black-hole or drop the answers of one direction.
 */
export interface NetworkKme {
  id: string;
  /** The running KME when it runs in this process (undefined for a child process, or while stopped). */
  kms: RunningKms;
  db: TestDatabase;
  /** A connection pool of the test's own to this KME's database (works whatever runs the KME). */
  query: (sql: string, params?: unknown[]) => Promise<Array<Record<string, any>>>;
  config: Config;
  logs: () => string;
  /** Stops this KME gracefully (its database stays); `restart()` brings it back on the same database and port. */
  stop: () => Promise<void>;
  restart: () => Promise<void>;
  /** A child-process KME only: SIGKILL, no chance to clean up (a crash). */
  kill?: () => Promise<void>;
}

export interface TestNetwork {
  /** The folder of the shared test PKI. */
  pkiDir: string;
  kmes: Map<string, NetworkKme>;
  kme: (id: string) => NetworkKme;
  /** The proxy `from` uses to reach `to`. */
  proxy: (from: string, to: string) => TcpProxy;
  /** A keep-alive ETSI client of an SAE at its own KME (or of the operator OPERATOR_1 at `kme`). */
  client: (sae: string, kme?: string) => EtsiClient;
  /** The simulated device at one end of a link. */
  device: (kme: string, link: string) => SimulatedDevice;
  pki: DemoPki;
  close: () => Promise<void>;
}

let sharedPki: Promise<{ dir: string; pki: DemoPki }> | undefined;
/** The test PKI shared by every network of this test process (KME_A..C, QKD_DEV for device simulators, SAEs). */
export function testPki() {
  sharedPki ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kms-net-pki-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const pki = await ensureDemoPki(dir, {
      kmeIds: ['KME_A', 'KME_B', 'KME_C', 'QKD_DEV'],
      saeIds: ['SAE_A', 'SAE_B', 'SAE_C', 'SAE_D', 'SAE_E'],
      strangerIds: ['SAE_X'],
      auditorIds: ['AUDITOR_1'],
      operatorIds: ['OPERATOR_1'],
    });
    return { dir, pki };
  })();
  return sharedPki;
}

export interface NetworkOptions {
  /**
   * `process`: run this KME as `kms serve` in a child process on a SoftHSM2 token (so that a test can kill it for
   * real and restart it on the same database and KEK); the others run in this process on hsm-mock.
   */
  kmes: Array<{
    id: string;
    saes: string[];
    process?: boolean;
    /** Its Cisco SKIP listener (TLS-PSK), all fields given. */
    skip?: Config['skip'];
    /** An ops listener (probes, GET /metrics) on a free port of 127.0.0.1; `kms.opsUrl` says where. */
    ops?: boolean;
  }>;
  links: Array<{ id: string; ends: [string] | [string, string]; rateBitsPerSecond?: number; source?: (kmeId: string) => Record<string, unknown> }>;
  keys?: Partial<Config['keys']>;
  network?: Partial<Config['network']>;
  requests?: Partial<Config['requests']>;
  /** Wait until every pool holds this many owned blocks on every link (default: some). */
  fill?: number;
}

/** Two KMEs joined by one link: KME_A (SAE_A) — KME_B (SAE_B). */
export const PAIR: Pick<NetworkOptions, 'kmes' | 'links'> = {
  kmes: [
    { id: 'KME_A', saes: ['SAE_A'] },
    { id: 'KME_B', saes: ['SAE_B'] },
  ],
  links: [{ id: 'A-B', ends: ['KME_A', 'KME_B'] }],
};

/** The demo's line: KME_A (SAE_A, SAE_D) — KME_B (SAE_B) — KME_C (SAE_C), with a loopback link at KME_A. */
export const LINE: Pick<NetworkOptions, 'kmes' | 'links'> = {
  kmes: [
    { id: 'KME_A', saes: ['SAE_A', 'SAE_D'] },
    { id: 'KME_B', saes: ['SAE_B'] },
    { id: 'KME_C', saes: ['SAE_C'] },
  ],
  links: [
    { id: 'A-local', ends: ['KME_A'] },
    { id: 'A-B', ends: ['KME_A', 'KME_B'] },
    { id: 'B-C', ends: ['KME_B', 'KME_C'] },
  ],
};

export async function startTestNetwork(opts: NetworkOptions): Promise<TestNetwork> {
  const { pki, dir: pkiDir } = await testPki();
  const seeds = mkdtempSync(join(tmpdir(), 'kms-net-seeds-'));
  const ports = new Map<string, number>();
  // Below the ephemeral range: `restart()` binds the same port again, after outgoing connections may have taken it.
  for (const k of opts.kmes) ports.set(k.id, await serverPort());
  const proxies = new Map<string, TcpProxy>();
  for (const l of opts.links) {
    if (l.ends.length !== 2) continue;
    for (const [from, to] of [l.ends, [l.ends[1], l.ends[0]]] as Array<[string, string]>) {
      proxies.set(`${from}>${to}`, await TcpProxy.start({ host: '127.0.0.1', port: ports.get(to)! }));
    }
  }
  const spec: NetworkSpec = {
    kmes: opts.kmes.map((k) => ({ id: k.id, port: ports.get(k.id)!, saes: k.saes })),
    links: opts.links.map((l) => {
      let seedFile: string | undefined;
      if (l.ends.length === 2) {
        seedFile = join(seeds, `${l.id}.seed`);
        writeFileSync(seedFile, randomBytes(32).toString('hex'));
      }
      return { id: l.id, ends: l.ends, rateBitsPerSecond: l.rateBitsPerSecond ?? 20_000_000, seedFile, source: l.source };
    }),
    pki,
    keys: { max_key_count: 2_000, ...opts.keys },
    network: { peer_timeout_ms: 2_000, sync_interval_ms: 200, ...opts.network },
    requests: opts.requests,
    poolSize: 8,
    peerUrl: (from, to) => `https://localhost:${proxies.get(`${from}>${to}`)!.port}`,
  };
  const asProcess = new Set(opts.kmes.filter((k) => k.process).map((k) => k.id));
  let token: { module: string; conf: string; tokenLabel: string; pin: string } | undefined;
  if (asProcess.size > 0) {
    const made = createSoftHsmToken(join(seeds, 'softhsm'), { label: 'kms-net' });
    if ('skip' in made) throw new Error(`a child-process KME needs SoftHSM2: ${made.skip}`);
    token = made;
    spec.kmes = spec.kmes.map((k) =>
      asProcess.has(k.id)
        ? { ...k, hsm: { type: 'pkcs11', module: made.module, token_label: made.tokenLabel, key_label: `kek-${k.id}`, create_key_if_missing: true } }
        : k,
    );
  }
  const configs = networkConfigs(spec);
  for (const config of configs.values()) {
    config.auditors = [{ id: 'AUDITOR_1' }];
    config.operators = [{ id: 'OPERATOR_1' }];
  }
  for (const k of opts.kmes) if (k.skip) configs.get(k.id)!.skip = k.skip;
  for (const k of opts.kmes) if (k.ops) configs.get(k.id)!.ops = { listen: { host: '127.0.0.1', port: 0 } };
  const kmes = new Map<string, NetworkKme>();
  const pools: pg.Pool[] = [];
  for (const [id, config] of configs) {
    const db = await freshDatabase();
    const pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // An idle client whose server ends it (the teardown's DROP DATABASE … WITH (FORCE)) emits 'error' on the pool;
    // unhandled, it would end the test process.
    pool.on('error', () => undefined);
    pools.push(pool);
    const query = async (sql: string, params?: unknown[]) => (await pool.query(sql, params)).rows;
    if (asProcess.has(id)) {
      kmes.set(id, await startChildKme(id, config, db, query, seeds, token!));
      continue;
    }
    const { log, text: logs } = capturingLogger();
    // hsm-mock keeps its KEK in memory: the same KEK for every (re)start of this KME, as an HSM would.
    const kek = randomBytes(32);
    // Its checkpoint signing key likewise (derived from the KEK): peers that witness its log pinned it.
    const start = () =>
      // A KEK version a rotation adds lives in this wrapper only (hsm-mock): a restart after a rotation loses it.
      startKms(config, { log, databaseUrl: db.url, wrapper: createMockKeyWrapper({ kek }), signingKey: createMockSigningKey({ seed: kek }), kekGraceMs: 0 });
    const entry: NetworkKme = {
      id,
      kms: await start(),
      db,
      query,
      config,
      logs,
      stop: async () => entry.kms.close(),
      restart: async () => {
        entry.kms = await start();
      },
    };
    kmes.set(id, entry);
  }
  const clients: EtsiClient[] = [];
  const saeHome = new Map(opts.kmes.flatMap((k) => k.saes.map((s) => [s, k.id] as const)));
  const net: TestNetwork = {
    pkiDir,
    kmes,
    kme: (id) => kmes.get(id)!,
    proxy: (from, to) => proxies.get(`${from}>${to}`)!,
    client: (sae, kme) => {
      const at = kmes.get(kme ?? saeHome.get(sae) ?? 'KME_A')!;
      const identity = pki.saes[sae] ?? pki.strangers[sae] ?? pki.operators[sae];
      const c = new EtsiClient(`https://localhost:${ports.get(at.id)}`, pki.ca, identity);
      clients.push(c);
      return c;
    },
    device: (kme, link) => kmes.get(kme)!.kms.sources.get(link) as SimulatedDevice,
    pki,
    close: async () => {
      clients.forEach((c) => c.close());
      for (const k of kmes.values()) await k.stop().catch(() => undefined);
      for (const p of proxies.values()) await p.close();
      for (const p of pools) await p.end();
      for (const k of kmes.values()) await k.db.drop();
      rmSync(seeds, { recursive: true, force: true });
    },
  };
  await waitForNetwork(net, opts.fill ?? 200);
  return net;
}

/**
 * Waits until every link is up at both ends (for KMEs of this process) and every end owns at least `blocks`
 * available blocks of it.
 */
export async function waitForNetwork(net: TestNetwork, blocks: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ready = true;
    for (const k of net.kmes.values()) {
      for (const link of k.config.links) {
        if (link.peer_kme_id && k.kms && !k.kms.network.linkSync.state(link.link_id)?.up) ready = false;
        const rows = await k.query('SELECT COALESCE(sum(available), 0)::int AS n FROM pool_count WHERE link_id = $1', [link.link_id]);
        if (((rows[0] as { n: number } | undefined)?.n ?? 0) < blocks) ready = false;
      }
    }
    if (ready) return;
    if (Date.now() > deadline) {
      const trouble = [...net.kmes.values()].flatMap((k) =>
        k.logs().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-5).map((l) => `${k.id}: ${l.slice(0, 400)}`),
      );
      throw new Error(`network not ready with ${blocks} blocks per link end; last warnings:\n${trouble.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs a KME as `kms serve` in a child process on the SoftHSM2 token, and controls it. */
async function startChildKme(
  id: string,
  config: Config,
  db: TestDatabase,
  query: NetworkKme['query'],
  dir: string,
  token: { conf: string; pin: string },
): Promise<NetworkKme> {
  const file = join(dir, `${id}.json`);
  writeFileSync(file, JSON.stringify(config));
  const env = { KMS_DATABASE_URL: db.url, KMS_HSM_PIN: token.pin, SOFTHSM2_CONF: token.conf, KMS_LOG_LEVEL: 'debug' };
  let proc: KmsProcess | undefined;
  const earlier: string[] = [];
  const spawnIt = async () => {
    proc = runKms(['serve', '--config', file], env);
    await waitFor(proc, () => proc!.stdout.includes('"msg":"KME listening"'), 60_000, `${id} listening`);
  };
  await spawnIt();
  const entry: NetworkKme = {
    id,
    kms: undefined as unknown as RunningKms,
    db,
    query,
    config,
    logs: () => earlier.join('') + (proc?.stdout ?? '') + (proc?.stderr ?? ''),
    stop: async () => {
      if (!proc || proc.child.exitCode !== null) return;
      proc.child.kill('SIGTERM');
      await proc.exited;
      earlier.push(proc.stdout, proc.stderr);
    },
    kill: async () => {
      if (!proc || proc.child.exitCode !== null) return;
      proc.child.kill('SIGKILL');
      await proc.exited;
      earlier.push(proc.stdout, proc.stderr);
    },
    restart: spawnIt,
  };
  return entry;
}

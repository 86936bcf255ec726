// The network part's set-up: three KMEs in a line, KME_A — KME_B — KME_C, each a `kms serve` child process with its
// own fresh database and the production HSM path (SoftHSM2: the bench's token, a KEK label per KME), joined by
// seeded simulated links. SAE_A is at KME_A, SAE_B at KME_B, SAE_C at KME_C; a key for SAE_C is relayed by KME_B.
//
// Like the single KME: the pools are filled with very fast links, then every KME restarts with links at the
// measuring rate. Pool caps (max_key_count) are sized per KME so that filling goes where the phases draw from:
// KME_A owns what its masters use on A-B; KME_B needs only the one-time pads of the relay on B-C; KME_C nothing.
// (The primary of a link splits new material by both ends' room, so equal caps would fill both ends equally.)
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import { networkConfigs } from '../src/config/network-builder.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import type { Child } from './children.js';
import { onCleanup } from './cleanup.js';
import { JsonClient } from './client.js';
import { fillPool } from './measure.js';
import { createDatabase, databaseFacts, identity, serverPort, startKme, unannouncedBlocks } from './setup.js';
import { enter } from './timeline.js';
import { ADMIN_URL, ANALYZE, CPU_PROF, DB_POOL, FILL_BPS, LINK_BPS, MAX_KEY_COUNT, NET_FILL_SECONDS, NET_FILL_TARGET } from './settings.js';

export const NET_KMES = [
  { id: 'KME_A', sae: 'SAE_A' },
  { id: 'KME_B', sae: 'SAE_B' },
  { id: 'KME_C', sae: 'SAE_C' },
] as const;
export type NetKme = (typeof NET_KMES)[number]['id'];

/** Keys the relay phase (j) may draw on KME_B's side of B-C, beyond which KME_B's pool needs no filling. */
export const RELAY_KEYS = 40_000;
const MAX_KEYS: Record<NetKme, number> = { KME_A: MAX_KEY_COUNT, KME_B: RELAY_KEYS + 20_000, KME_C: 10_000 };
/** Blocks per device key while filling (see writeConfigs). */
const FILL_BATCH = 250;

export interface Network {
  urls: Record<NetKme, string>;
  /** Keys KME_A could hand out now: to SAE_A for SAE_B (link A-B), and for SAE_C (also bounded by KME_B's reach). */
  storedDirect: () => Promise<number>;
  storedRelayed: () => Promise<number>;
  /** Every KME process started (filling and measuring), for the log summary. */
  children: Child[];
  /** BENCH_CPU_PROF: each KME's --cpu-prof folders, one per start. */
  profileDirs: Record<NetKme, string[]>;
  facts: Record<string, unknown>;
  stop: () => Promise<void>;
}

export async function startNetwork(root: string, pki: DemoPki, token: SoftHsmToken): Promise<Network> {
  const dir = join(root, 'network');
  mkdirSync(dir);
  const ports = {} as Record<NetKme, number>;
  const databases = {} as Record<NetKme, string>;
  for (const k of NET_KMES) {
    ports[k.id] = await serverPort(); // below the ephemeral range: the KME is restarted on it minutes later
    databases[k.id] = await createDatabase(ADMIN_URL);
  }
  // Both ends of a link read the same seed: 32 random bytes as 64 hex digits.
  const seed = (link: string) => {
    const path = join(dir, `${link}.seed`);
    writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    return path;
  };
  const seeds = { 'A-B': seed('A-B'), 'B-C': seed('B-C') };

  /**
   * Writes each KME's config for links at `rate` and returns the file paths. Filling (`fill`) differs in two ways
   * that only matter for it: small device batches, so that one announcement to the secondary (up to 256 of them)
   * stays a few seconds of the secondary's work; and a long peer timeout, so that an announcement the secondary is
   * still working on is not sent again on top (each retry would be processed in full once more).
   */
  const writeConfigs = (rate: number, fill: boolean) => {
    const configs = networkConfigs({
      kmes: NET_KMES.map((k) => ({
        id: k.id,
        port: ports[k.id],
        saes: [k.sae],
        hsm: { type: 'pkcs11', module: token.module, token_label: token.tokenLabel, key_label: `kek-${k.id}`, create_key_if_missing: true },
      })),
      links: [
        { id: 'A-B', ends: ['KME_A', 'KME_B'], rateBitsPerSecond: rate, seedFile: seeds['A-B'] },
        { id: 'B-C', ends: ['KME_B', 'KME_C'], rateBitsPerSecond: rate, seedFile: seeds['B-C'] },
      ],
      pki,
      keys: { key_size: 256, max_key_count: MAX_KEY_COUNT },
      ...(fill ? { network: { peer_timeout_ms: 30_000 } } : {}),
      poolSize: DB_POOL,
      peerUrl: (_from, to) => `https://127.0.0.1:${ports[to as NetKme]}`,
    });
    const paths = {} as Record<NetKme, string>;
    for (const k of NET_KMES) {
      const config = configs.get(k.id)!;
      config.keys.max_key_count = MAX_KEYS[k.id];
      for (const l of config.links) l.max_blocks_per_batch = fill ? FILL_BATCH : 2000; // measuring: as the single KME's link
      paths[k.id] = join(dir, `${k.id}-${rate}.json`);
      writeFileSync(paths[k.id], JSON.stringify(config, null, 2));
    }
    return paths;
  };

  const children: Child[] = [];
  const profileDirs = Object.fromEntries(NET_KMES.map((k) => [k.id, [] as string[]])) as Record<NetKme, string[]>;
  let running: Child[] = [];
  // Masters' end first: a KME waits for its requests in flight, and those need the KMEs further along still up.
  const stopAll = async () => {
    for (const k of NET_KMES) await running.find((c) => c.name === k.id)?.stop();
    running = [];
  };
  const startAll = async (rate: number) => {
    const paths = writeConfigs(rate, rate === FILL_BPS);
    // One after the other (the first start creates each KEK on the shared token), each link's secondary before its
    // primary: a primary whose peer is not up yet piles up material it cannot announce.
    for (const k of [...NET_KMES].reverse()) {
      const other = k.id === 'KME_A' ? 'SAE_B' : 'SAE_A';
      const args: string[] = [];
      if (CPU_PROF) {
        const profileDir = join(dir, 'prof', `${k.id}-${profileDirs[k.id].length}`);
        mkdirSync(profileDir, { recursive: true });
        profileDirs[k.id].push(profileDir);
        args.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
      }
      const child = await startKme(paths[k.id], { databaseUrl: databases[k.id], token }, ports[k.id], identity(pki, k.sae), args, {
        name: k.id,
        statusPath: `/api/v1/keys/${other}/status`,
      });
      children.push(child);
      running.push(child);
    }
  };

  const urls = Object.fromEntries(NET_KMES.map((k) => [k.id, `https://127.0.0.1:${ports[k.id]}`])) as Record<NetKme, string>;
  const status = new JsonClient(urls.KME_A, identity(pki, 'SAE_A'));
  onCleanup('close the network status client', () => status.close());
  const storedFor = (slave: string) => async () => {
    const r = await status.call('GET', `/api/v1/keys/${slave}/status`);
    if (r.status !== 200) throw new Error(`KME_A status for ${slave} answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.stored_key_count as number;
  };
  const storedDirect = storedFor('SAE_B');
  const storedRelayed = storedFor('SAE_C');

  console.log(`\nnetwork: KME_A — KME_B — KME_C on ports ${NET_KMES.map((k) => ports[k.id]).join(', ')}, ` +
    `databases ${NET_KMES.map((k) => new URL(databases[k.id]).pathname.slice(1)).join(', ')}`);
  enter('network fill');
  await startAll(FILL_BPS);
  const direct = await fillPool(storedDirect, NET_FILL_TARGET, NET_FILL_SECONDS, "KME_A's pool on A-B");
  const relayed = await fillPool(storedRelayed, Math.min(RELAY_KEYS, NET_FILL_TARGET), 20, "the relayed pair A→C (KME_B's pads on B-C)");
  await stopAll();
  const db = await Promise.all(NET_KMES.map((k) => databaseFacts(databases[k.id], ANALYZE)));
  enter('network settle');
  await startAll(LINK_BPS);
  // Material the fast links stored but had not announced when they stopped is announced now: wait for that, so that
  // it does not run beside the measurements. Keys for a remote slave count once the links are up again (link sync).
  const backlog = async () => (await unannouncedBlocks(databases.KME_A, 'A-B')) + (await unannouncedBlocks(databases.KME_B, 'B-C'));
  const started = Date.now();
  const deadline = started + 60_000;
  let last = 0;
  const measuringBatch = (LINK_BPS / 256) * 2; // what 2 s of the measuring links leave unannounced at most
  while ((await backlog()) > measuringBatch || (await storedDirect()) === 0 || (await storedRelayed()) === 0) {
    if (Date.now() - last > 3000) {
      console.log(`  waiting for the links: ${(await backlog()).toLocaleString('en-US')} blocks to announce`);
      last = Date.now();
    }
    if (Date.now() > deadline) {
      const tail = running.flatMap((c) => c.lines.slice(-10).map((l) => `${c.name}: ${l.slice(0, 400)}`));
      throw new Error(`the network links did not settle within 60 s of the restart; last log lines:\n${tail.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`network restarted with ${LINK_BPS / 1e6} Mbit/s links for the measurements, settled in ${((Date.now() - started) / 1000).toFixed(1)} s (A→B: ` +
    `${(await storedDirect()).toLocaleString('en-US')} keys, A→C: ${(await storedRelayed()).toLocaleString('en-US')} keys)`);

  return {
    urls,
    storedDirect,
    storedRelayed,
    children,
    profileDirs,
    facts: {
      max_key_count: MAX_KEYS,
      fill: { direct, relayed },
      postgres_autovacuum: db.map((d) => d.autovacuum)[0],
      analyzed_after_fill: ANALYZE,
    },
    stop: stopAll,
  };
}

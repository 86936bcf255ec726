// One KME (KME_B, with SAE_A and SAE_B on its loopback link) on a fresh database of its own, which the parts of the
// single-KME stage and the soak start and restart with the link rate and pool cap each needs: a very fast link to
// fill, a realistic one to measure, a fast one with room to measure ingest. One place for that, so that every start
// gets the same config, the same RSS tracking and (BENCH_CPU_PROF=1) a profile folder of its own.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import type { Child } from './children.js';
import { onCleanup } from './cleanup.js';
import { JsonClient, type Identity } from './client.js';
import type { PoolReading } from './growth.js';
import { ADMIN_URL, DB_POOL } from './settings.js';
import { createDatabase, identity, serverPort, startKme, writeKmeConfig } from './setup.js';
import { enter } from './timeline.js';

/** The timeline window of a KME's start (see KmeHost.start); the per-phase CPU summary leaves these out. */
export const startWindow = (label: string) => `${label} (KME start)`;
export const isStartWindow = (label: string) => label.endsWith(' (KME start)');

export interface LinkSettings {
  /** The simulated link's secure key rate. */
  rateBps: number;
  /** max_key_count: the pool cap, which also bounds how much the link may ingest. */
  maxKeyCount: number;
  /** max_blocks_per_batch: see KmeSettings (2000 when not given; null: the KME's default). */
  maxBlocksPerBatch?: number | null;
  /** audit.seal_every_ms: see KmeSettings. */
  sealEveryMs?: number;
}

/** A replica's coordination: see KmeHost.create. */
export interface ReplicaSettings {
  name: string;
  redisUrl: string;
  keyPrefix: string;
}

/** A KME process this host started, with where its CPU profile went (if profiled) and what it was started for. */
export interface Started {
  child: Child;
  label: string;
  link: LinkSettings;
  profileDir?: string;
}

export class KmeHost {
  readonly A: Identity;
  readonly url: string;
  readonly started: Started[] = [];
  private running: Child | undefined;
  private readonly status: JsonClient;

  private constructor(
    private readonly root: string,
    private readonly pki: DemoPki,
    private readonly token: SoftHsmToken,
    readonly databaseUrl: string,
    readonly port: number,
    /** BENCH_CPU_PROF: each start runs with --cpu-prof, into a folder of its own. */
    private readonly profile: boolean,
    private readonly replica?: ReplicaSettings,
  ) {
    this.A = identity(pki, 'SAE_A');
    this.url = `https://127.0.0.1:${port}`;
    this.status = new JsonClient(this.url, this.A);
    onCleanup('close the status client', () => this.status.close());
  }

  /**
   * A KME on a fresh database, or (`replicaOf`) another replica of the same KME: the same database, a port of its
   * own; replicas coordinate through `replica.redisUrl` under `replica.keyPrefix` and get `replica.name` (their own
   * line in the memory report).
   */
  static async create(
    root: string,
    pki: DemoPki,
    token: SoftHsmToken,
    opts: { profile: boolean; replicaOf?: KmeHost; replica?: ReplicaSettings },
  ): Promise<KmeHost> {
    const databaseUrl = opts.replicaOf?.databaseUrl ?? (await createDatabase(ADMIN_URL));
    return new KmeHost(root, pki, token, databaseUrl, await serverPort(), opts.profile, opts.replica);
  }

  get databaseName(): string {
    return new URL(this.databaseUrl).pathname.slice(1);
  }

  get children(): Child[] {
    return this.started.map((s) => s.child);
  }

  /** The CPU profile folders of every start (BENCH_CPU_PROF). */
  get profileDirs(): string[] {
    return this.started.map((s) => s.profileDir).filter((d): d is string => d !== undefined);
  }

  /**
   * Starts the KME (stopping the running one first) and resolves once GET status answers. The timeline gets a
   * window `label (KME start)` for the start (module loading, migrations: not what a phase measures) and then
   * `label` from the moment the KME answers.
   */
  async start(link: LinkSettings, label: string): Promise<Child> {
    await this.stop();
    enter(startWindow(label));
    const config = writeKmeConfig(this.root, this.pki, this.token, {
      port: this.port,
      rateBitsPerSecond: link.rateBps,
      maxKeyCount: link.maxKeyCount,
      maxBlocksPerBatch: link.maxBlocksPerBatch,
      sealEveryMs: link.sealEveryMs,
      dbPoolSize: DB_POOL,
      redisKeyPrefix: this.replica?.keyPrefix,
    });
    let profileDir: string | undefined;
    if (this.profile) {
      profileDir = join(this.root, 'prof', `${this.port}-${this.started.length}`);
      mkdirSync(profileDir, { recursive: true });
    }
    const args = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
    const env = { databaseUrl: this.databaseUrl, token: this.token, redisUrl: this.replica?.redisUrl };
    const child = await startKme(config, env, this.port, this.A, args, this.replica ? { name: this.replica.name } : {});
    enter(label);
    this.started.push({ child, label, link, ...(profileDir ? { profileDir } : {}) });
    this.running = child;
    return child;
  }

  /** Stops the running KME; resolves once it has exited (its log and profile are complete then). */
  async stop(): Promise<void> {
    await this.running?.stop();
    this.running = undefined;
  }

  /** The ETSI status for SAE_A → SAE_B. */
  async statusBody(): Promise<Record<string, any>> {
    const r = await this.status.call('GET', '/api/v1/keys/SAE_B/status');
    if (r.status !== 200) throw new Error(`status answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body as Record<string, any>;
  }

  /** Keys SAE_A could get for SAE_B now. */
  readonly stored = async (): Promise<number> => (await this.statusBody()).stored_key_count as number;

  /** The pool and the link's ingest count (status_extension.qkms_link, when the KME reports it). */
  readonly poolReading = async (): Promise<PoolReading> => {
    const s = await this.statusBody();
    const blocks = s.status_extension?.qkms_link?.ingested_blocks;
    return { stored: s.stored_key_count as number, ...(typeof blocks === 'number' ? { ingestedBlocks: blocks } : {}) };
  };
}

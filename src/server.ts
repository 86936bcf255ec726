import type { SecureContextOptions, Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import { AuditorService } from './audit/auditor-service.js';
import { PrincipalRegistry } from './auth/registry.js';
import { KeyAdmin } from './admin/key-admin.js';
import { PoolAdmin } from './admin/pool-admin.js';
import { PolicyAdmin } from './admin/policy-admin.js';
import { SaeAdmin } from './admin/sae-admin.js';
import { Barrier } from './barrier/barrier.js';
import { ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import type { KeyWrapper } from './hsm/key-wrapper.js';
import { SwappableKeyWrapper } from './hsm/swappable-wrapper.js';
import { openKeyWrapper, openSigningKey } from './hsm/open.js';
import type { SigningKey } from './hsm/signing-key.js';
import { logOrigin, Sealer } from './audit/sealer.js';
import { RefusalLog } from './audit/refusals.js';
import { LogKeys } from './audit/log-keys.js';
import { Witness } from './audit/witness.js';
import { startCosigning } from './peers/cosigning.js';
import { KeyService } from './keys/key-service.js';
import { FallbackState } from './keys/fallback-state.js';
import { startOpsServer } from './ops/ops-server.js';
import { startSkipServer } from './skip/skip-server.js';
import { KmeMetrics } from './metrics/kme-metrics.js';
import { databaseCheck, hsmCheck, Readiness } from './ops/readiness.js';
import { MasterDeliveryBatcher } from './keys/master-batcher.js';
import { startEraserJob } from './lifecycle/eraser.js';
import { startExpiryJob } from './lifecycle/expiry.js';
import { startPoolDeletionJob } from './lifecycle/pool-deletion.js';
import { PoolGate } from './pool/pool-gate.js';
import { KekRotation } from './lifecycle/kek-rotation.js';
import { startKekRewrapJob } from './lifecycle/kek-rewrap-job.js';
import { ClientTrust } from './auth/client-trust.js';
import { TlsRotation, type TlsView } from './tls-rotation.js';
import { PolicyBook } from './policy/policy-book.js';
import { startPoolLevelWatch } from './policy/pool-level-watch.js';
import { PolicyChangeError } from './store/policies.js';
import type { Logger } from './log.js';
import { buildNetwork, type Network } from './peers/network.js';
import { Topology } from './peers/topology.js';
import { Ingester } from './pool/ingester.js';
import { LinkFigures } from './pool/link-figures.js';
import type { LinkSource } from './sources/link-source.js';
import { createSource } from './sources/registry.js';
import { createDb, type Db } from './store/db.js';
import { PrincipalChangeError } from './store/principals.js';
import { checkSchema, migrate } from './store/migrate.js';
import { ensureLink, nextSeq } from './store/pool.js';
import { startStatisticsJob } from './lifecycle/statistics.js';
import { startCustodyIndexFlushJob } from './lifecycle/custody-index-flush.js';
import { postQuantumGroups, tlsServerOptions } from './tls.js';
import { LeaderLock } from './lifecycle/leader-lock.js';
import { runWhileLeading } from './lifecycle/leader-job.js';
import { openCoordinator, redisPrefix, reloadOnChange } from './coord/open.js';

export interface RunningKms {
  app: FastifyInstance;
  db: Db;
  wrapper: KeyWrapper;
  /** Seals the custody log (when this process leads); tests call sealOnce() to seal now. */
  sealer: Sealer;
  /** Audits refused and failed requests; tests call flush() to write what is pending now. */
  refusals: RefusalLog;
  /** One ingester per link this KME reads from its own device (loopback and primary ends). */
  ingesters: Map<string, Ingester>;
  /** The devices (or simulators) of every link, by link ID. */
  sources: Map<string, LinkSource>;
  /** Ingest figures of every link, by link ID. */
  figures: Map<string, LinkFigures>;
  network: Network;
  topology: Topology;
  /** https://host:port the API listens on. */
  url: string;
  /** http://host:port of the ops listener (liveness, readiness), when configured. */
  opsUrl?: string;
  /** https://host:port of the Cisco SKIP listener (TLS-PSK), when configured. */
  skipUrl?: string;
  close(): Promise<void>;
  /** Reloads the TLS server certificate, CA bundle and CRLs from their files (SIGHUP); rejects, changing nothing, when one is bad. */
  reloadTls(why: string): Promise<TlsView>;
  /** KEK rotation: rotate, status, and the re-wrap's steps (tests drive them). */
  kek: KekRotation;
}

export interface StartOptions {
  log: Logger;
  databaseUrl: string;
  /** An already opened wrapper (tests inject one to simulate HSM outages); otherwise opened from config.hsm. */
  wrapper?: KeyWrapper;
  /** The checkpoint signing key likewise; otherwise opened from config.hsm. */
  signingKey?: SigningKey;
  /** How long after a KEK rotation an old version may be destroyed (default 60 s; tests shorten it). */
  kekGraceMs?: number;
}

/**
 * Starts one KME: migrate, connect, open the HSM, register its links and open their devices, listen, then start
 * ingest, link upkeep and expiry. Returns once the API answers requests. `close()` stops everything in reverse
 * order and is safe to call once.
 */
export async function startKms(config: Config, opts: StartOptions): Promise<RunningKms> {
  const { log } = opts;
  const tls = tlsServerOptions(config.tls); // read first: a bad path should fail before anything starts
  // A KME with a role of its own (database.app_role) cannot migrate: `kms migrate` does, as the tables' owner.
  if (config.database.app_role) await checkSchema(opts.databaseUrl);
  else await migrate(opts.databaseUrl, log);
  const db = createDb({ url: opts.databaseUrl, poolSize: config.database.pool_size, log });
  const metrics = new KmeMetrics(config.kme_id); // served on the ops listener; counting costs an increment
  metrics.watchDatabase(db);
  // Swappable: rotating the KEK may open a fresh HSM connection while the KME runs.
  const wrapper = new SwappableKeyWrapper(opts.wrapper ?? (await openKeyWrapper(config.hsm, log)), metrics.hsmError);
  const closers: Array<() => Promise<unknown>> = [() => wrapper.close(), () => db.end()];
  try {
    const signingKey = opts.signingKey ?? (await openSigningKey(config.hsm, log));
    closers.unshift(() => signingKey.close());
    const barrier = new Barrier(wrapper);
    const kek = new KekRotation({
      db,
      wrapper,
      barrier,
      reopen: () => openKeyWrapper(config.hsm, log),
      kmeId: config.kme_id,
      log,
      ...(opts.kekGraceMs !== undefined ? { graceMs: opts.kekGraceMs } : {}),
    });
    await kek.start();
    const coordinator = await openCoordinator(config, log);
    closers.unshift(() => coordinator.close());
    const registry = await openRegistry(db, config, log);
    closers.unshift(registry.start(REGISTRY_POLL_MS));
    const { principals } = registry;
    const topology = new Topology(config, (saeId) => principals.isRegistered('sae', saeId));
    const sources = new Map<string, LinkSource>();
    const figures = new Map<string, LinkFigures>();
    for (const link of config.links) {
      const info = topology.link(link.link_id)!;
      await registerLink(db, config, info.peerKmeId, link.primary_kme_id!, link.link_id);
      const source = await createSource(link.source, {
        kmeId: config.kme_id,
        linkId: link.link_id,
        blockBits: info.blockBits,
        role: info.role,
        startSeq: () => nextSeq(db, link.link_id),
        log,
      });
      sources.set(link.link_id, source);
      figures.set(link.link_id, new LinkFigures(link.link_id, info.blockBits, source));
      closers.unshift(() => source.close());
    }
    const policies = await openPolicyBook(db, config);
    closers.unshift(policies.start(REGISTRY_POLL_MS, log));
    // After the links are registered: the gate reads their pools' states.
    const pools = new PoolGate(db);
    await pools.reload();
    closers.unshift(pools.start(REGISTRY_POLL_MS, log));
    closers.unshift(reloadOnChange(coordinator, { principals: registry, policies, pools }, log));
    const logKeys = new LogKeys({ db, wrapper, signingKey, name: logOrigin(config), log });
    closers.unshift(() => logKeys.close()); // after the sealer and the witness, which sign with them
    const network = buildNetwork({
      config,
      principals,
      pools,
      policies,
      topology,
      db,
      barrier,
      sources,
      figures,
      tls: { ca: tls.ca as Buffer, cert: tls.cert as Buffer, key: tls.key as Buffer, ecdhCurve: postQuantumGroups },
      witness: new Witness({ db, keys: logKeys, kmeId: config.kme_id, log }),
      log,
    });
    closers.unshift(() => network.close());
    const fallback = await new FallbackState({ db, kmeId: config.kme_id, log }).load();
    const batcher = new MasterDeliveryBatcher({
      db,
      barrier,
      kmeId: config.kme_id,
      forwarder: network.forwarder,
      keyTtlMs: config.keys.key_ttl_seconds * 1000,
      maxQueued: config.requests.max_queued,
      log,
      fallback: { state: fallback, peerKeys: network.peerKemKeys },
    });
    const keys = new KeyService({
      kmeId: config.kme_id,
      db,
      barrier,
      topology,
      batcher,
      linkSync: network.linkSync,
      figures,
      limits: config.keys,
      deadlineMs: config.requests.deadline_ms,
      maxQueued: config.requests.max_queued,
      principals,
      pools,
      policies,
      fallback,
      delivered: metrics.keysDelivered,
      counters: coordinator,
    });
    metrics.collectFrom({ db, log, figures, fallback, topology, policies });
    const refusals = new RefusalLog(db, log, config.kme_id);
    closers.unshift(() => refusals.close()); // after the API has closed: its last refusals are written too
    const trust = await ClientTrust.load({ ca: tls.ca as Buffer, ...(tls.crl ? { crl: tls.crl as Buffer } : {}) }).catch((err: Error) => {
      throw new ConfigError(err.message);
    });
    // The server exists once the app is built; a reload only ever runs after that.
    const secureContext = { setSecureContext: (options: SecureContextOptions) => (app.server as unknown as TlsServer).setSecureContext(options) };
    const tlsRotation = new TlsRotation({ tls: config.tls, server: secureContext, principals, trust, peerClients: [...network.clients.values()], db, log }, tls);
    // Before the API: while the API drains at a stop, the probes still hear "not ready" (closers run last-in first).
    const readiness = new Readiness([databaseCheck(db), hsmCheck(wrapper), ...(coordinator.kind === 'redis' ? [{ name: 'redis', run: () => coordinator.check() }] : [])]);
    const ops = config.ops ? await startOpsServer({ ...config.ops.listen, readiness, metrics: metrics.registry, log }) : undefined;
    if (ops) closers.unshift(() => ops.close());
    const app = await buildApp({
      keys,
      principals,
      peers: network.peerService,
      auditor: new AuditorService(db, logOrigin(config)),
      saeAdmin: new SaeAdmin(db, registry, (topic) => coordinator.publish(topic)),
      keyAdmin: new KeyAdmin({ db, topology, forwarder: network.forwarder, log }),
      policyAdmin: new PolicyAdmin({ db, book: policies, announce: (topic) => coordinator.publish(topic) }),
      poolAdmin: new PoolAdmin({ db, gate: pools, topology, minDeletionWaitSeconds: config.admin.min_pool_deletion_wait_seconds, sources, log, announce: (topic) => coordinator.publish(topic) }),
      tlsRotation,
      kek,
      refusals,
      db,
      log,
      tls,
      listen: config.listen,
      maxEventLoopDelayMs: config.requests.max_event_loop_delay_ms,
      ...(config.requests.per_sae ? { perSae: { max: config.requests.per_sae.max, windowMs: config.requests.per_sae.window_ms, redisPrefix: redisPrefix(config), redis: coordinator.redis } } : {}),
      metrics: metrics.requests,
    });
    closers.unshift(() => closeApi(app.server, () => app.close()));
    await app.listen({ host: config.listen.host, port: config.listen.port });
    const skip = config.skip ? await startSkipServer({ config: config.skip, keys, principals, refusals, log }) : undefined;
    if (skip) closers.unshift(() => skip.close());

    const ingesters = new Map<string, Ingester>();
    for (const link of config.links) {
      const info = topology.link(link.link_id)!;
      if (info.role === 'secondary') continue; // it stores what the primary announces
      const ingester = new Ingester({
        db,
        barrier,
        source: sources.get(link.link_id)!,
        kmeId: config.kme_id,
        linkId: link.link_id,
        blockBits: info.blockBits,
        role: info.role,
        maxBlocks: config.keys.max_key_count,
        maxBlocksPerBatch: link.max_blocks_per_batch,
        peerRoom: network.peerRooms.get(link.link_id),
        onStored: (blocks) => {
          figures.get(link.link_id)?.record(blocks);
          network.announcers.get(link.link_id)?.kick();
        },
        idleMs: link.source.type === 'file' ? link.source.poll_ms : undefined,
        paused: () => !pools.ingests(link.link_id),
        log,
      });
      ingesters.set(link.link_id, ingester);
      // One replica reads each link's device: the one holding the link's lock; another takes over when it dies.
      closers.unshift(
        await runWhileLeading({
          databaseUrl: opts.databaseUrl,
          job: `ingest:${link.link_id}`,
          everyMs: LEADER_POLL_MS,
          start: async () => {
            sources.get(link.link_id)!.catchUp?.(await nextSeq(db, link.link_id));
            ingester.start();
          },
          stop: () => ingester.stop(),
          log,
        }),
      );
    }
    network.start();
    // Housekeeping runs on one replica: the holder of one lock (the KEK re-wrap and the sealer hold their own).
    const housekeeping = new LeaderLock(opts.databaseUrl, 'housekeeping', log);
    closers.unshift(() => housekeeping.close()); // after the jobs below, which ask it
    const leads = () => housekeeping.lead().catch(() => false);
    closers.unshift(startExpiryJob(db, { kmeId: config.kme_id, log, leads }));
    closers.unshift(startPoolDeletionJob({ db, gate: pools, kmeId: config.kme_id, log, leads }));
    closers.unshift(startPoolLevelWatch({ db, topology, policies, keySize: config.keys.key_size, log, leads }));
    closers.unshift(startEraserJob({ db, barrier, log, leads }));
    closers.unshift(startKekRewrapJob({ rotation: kek, databaseUrl: opts.databaseUrl, log }));
    closers.unshift(startStatisticsJob(db, log, { leads }));
    closers.unshift(startCustodyIndexFlushJob(db, log, { leads }));
    const sealer = new Sealer({ db, databaseUrl: opts.databaseUrl, keys: logKeys, everyMs: config.audit.seal_every_ms, log });
    closers.unshift(sealer.start());
    closers.unshift(startCosigning({ db, clients: network.clients, everyMs: config.audit.cosign_every_ms, log }));

    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.listen.port;
    const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? 'localhost' : config.listen.host;
    const url = `https://${host}:${port}`;
    log.info(
      {
        kme: config.kme_id,
        url,
        hsm: wrapper.description,
        links: topology.links.map((l) => ({
          link: l.linkId,
          peer: l.peerKmeId ?? '(loopback)',
          role: l.role,
          device: sources.get(l.linkId)!.description,
        })),
        saes: config.saes.map((s) => s.id),
        remote_saes: config.network.remote_saes.map((r) => `${r.sae_id}@${r.kme_id}`),
        tls_groups: postQuantumGroups ?? 'Node defaults (no post-quantum group in this OpenSSL)',
      },
      'KME listening',
    );
    readiness.markServing();
    let closed: Promise<void> | undefined;
    const close = () =>
      (closed ??= (async () => {
        readiness.markClosing();
        for (const c of closers) {
          const started = Date.now();
          await c().catch((err: Error) => log.warn({ err: { message: err.message } }, 'error while closing'));
          // Which part holds a shutdown up is worth knowing (a restart waits for it).
          const ms = Date.now() - started;
          if (ms > 2_000) log.warn({ part: c.toString().slice(0, 80), ms }, 'slow to close');
        }
      })());
    const reloadTls = (why: string) => tlsRotation.reload({ actor: `kme:${config.kme_id}` }, why);
    return { app, db, wrapper, sealer, refusals, ingesters, sources, figures, network, topology, url, ...(ops ? { opsUrl: ops.url } : {}), ...(skip ? { skipUrl: skip.url } : {}), close, reloadTls, kek };
  } catch (err) {
    for (const c of closers) await c().catch(() => undefined);
    throw err;
  }
}

/** How often a KME looks for registry changes made by another process: a revocation reaches it within this. */
const REGISTRY_POLL_MS = 500;
/** How often a replica asks for a leader-only job's lock: the longest a dead leader's job stays undone, about. */
const LEADER_POLL_MS = 1_000;

/** The registry of principals, seeded from the config; a seed the table refuses is a config error that says why. */
async function openRegistry(db: Db, config: Config, log: Logger): Promise<PrincipalRegistry> {
  try {
    return await PrincipalRegistry.open(db, config, log);
  } catch (err) {
    if (err instanceof PrincipalChangeError) throw new ConfigError(`the config's saes, peers, auditors and operators: ${err.message}`);
    throw err;
  }
}

async function openPolicyBook(db: Db, config: Config): Promise<PolicyBook> {
  try {
    return await PolicyBook.open(db, config);
  } catch (err) {
    if (err instanceof PolicyChangeError) throw new ConfigError(`the config's policies: ${err.message}`);
    throw err;
  }
}

/** Registers a link on first start; refuses to start when the config changed what its stored material depends on. */
async function registerLink(db: Db, config: Config, peer: string | undefined, primary: string, linkId: string): Promise<void> {
  const blockBits = config.keys.key_size;
  const stored = await ensureLink(db, { linkId, localKmeId: config.kme_id, peerKmeId: peer ?? config.kme_id, primaryKmeId: primary, blockBits });
  const field = `/links/${config.links.findIndex((l) => l.link_id === linkId)}`;
  if (stored.blockBits !== blockBits) {
    throw new ConfigError(
      `/keys/key_size: link ${linkId} stores material in blocks of ${stored.blockBits} bits; key_size cannot change to ${blockBits} while it holds keys`,
    );
  }
  if (stored.peerKmeId !== (peer ?? config.kme_id)) {
    throw new ConfigError(`${field}/peer_kme_id: link ${linkId} was registered with ${stored.peerKmeId} at its other end; use a new link_id`);
  }
  if (stored.primaryKmeId !== primary) {
    throw new ConfigError(`${field}/primary_kme_id: link ${linkId} was registered with ${stored.primaryKmeId} as its primary; use a new link_id`);
  }
}

/**
 * Fastify's close lets requests in flight finish, which is what a key service owes its clients; but a client that
 * never finishes its request must not hold a stop or a restart up. Past the grace period the remaining connections
 * are cut. A request cut after its keys were committed loses its answer, and a lost answer burns the keys: never
 * handed out twice, as for any answer lost on the network.
 */
async function closeApi(server: { closeAllConnections?: () => void }, close: () => Promise<unknown>, graceMs = 3_000): Promise<void> {
  const cut = setTimeout(() => server.closeAllConnections?.(), graceMs);
  try {
    await close();
  } finally {
    clearTimeout(cut);
  }
}

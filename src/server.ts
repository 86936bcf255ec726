import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import { ConfigSaeRegistry } from './auth/sae-registry.js';
import { Barrier } from './barrier/barrier.js';
import { ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import type { KeyWrapper } from './hsm/key-wrapper.js';
import { openKeyWrapper } from './hsm/open.js';
import { KeyService } from './keys/key-service.js';
import type { Logger } from './log.js';
import { Ingester } from './pool/ingester.js';
import { createSource } from './sources/registry.js';
import { createDb, type Db } from './store/db.js';
import { migrate } from './store/migrate.js';
import { ensureLink, nextSeq } from './store/pool.js';
import { startStatisticsJob } from './store/statistics.js';
import { postQuantumGroups, tlsServerOptions } from './tls.js';

export interface RunningKms {
  app: FastifyInstance;
  db: Db;
  wrapper: KeyWrapper;
  ingester: Ingester;
  /** https://host:port the API listens on. */
  url: string;
  close(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  databaseUrl: string;
  /** An already opened wrapper (tests inject one to simulate HSM outages); otherwise opened from config.hsm. */
  wrapper?: KeyWrapper;
}

/**
 * Starts one KME: migrate, connect, open the HSM, register the link, start ingest, listen. Returns once the API
 * answers requests. `close()` stops everything in reverse order and is safe to call once.
 */
export async function startKms(config: Config, opts: StartOptions): Promise<RunningKms> {
  const { log } = opts;
  const tls = tlsServerOptions(config.tls); // read first: a bad path should fail before anything starts
  await migrate(opts.databaseUrl, log);
  const db = createDb({ url: opts.databaseUrl, poolSize: config.database.pool_size, log });
  const wrapper = opts.wrapper ?? (await openKeyWrapper(config.hsm, log));
  const closers: Array<() => Promise<unknown>> = [() => wrapper.close(), () => db.end()];
  try {
    const barrier = new Barrier(wrapper);
    const blockBits = config.keys.key_size;
    const linkId = config.source.link_id ?? `${config.kme_id}-loopback`;
    const link = await ensureLink(db, { linkId, localKmeId: config.kme_id, peerKmeId: config.kme_id, blockBits });
    if (link.blockBits !== blockBits) {
      throw new ConfigError(
        `/keys/key_size: link ${linkId} stores material in blocks of ${link.blockBits} bits; key_size cannot change to ${blockBits} while it holds keys`,
      );
    }
    const source = await createSource(config.source, {
      kmeId: config.kme_id,
      blockBits,
      defaultLinkId: linkId,
      startSeq: (id) => nextSeq(db, id),
    });
    closers.unshift(async () => source.close());
    const registry = new ConfigSaeRegistry(config.saes);
    const keys = new KeyService({
      kmeId: config.kme_id,
      db,
      barrier,
      registry,
      limits: config.keys,
      linkFor: () => ({ linkId, blockBits, targetKmeId: config.kme_id }),
    });
    const app = await buildApp({ keys, registry, db, log, tls });
    closers.unshift(() => app.close());
    await app.listen({ host: config.listen.host, port: config.listen.port });
    const ingester = new Ingester({
      db,
      barrier,
      source,
      kmeId: config.kme_id,
      maxBlocks: config.keys.max_key_count,
      maxBlocksPerBatch: config.source.max_blocks_per_batch,
      log,
    });
    ingester.start();
    closers.unshift(() => ingester.stop());
    const stopStatistics = startStatisticsJob(db, log);
    closers.unshift(async () => stopStatistics());
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.listen.port;
    const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? 'localhost' : config.listen.host;
    const url = `https://${host}:${port}`;
    log.info(
      {
        kme: config.kme_id,
        url,
        hsm: wrapper.description,
        source: source.description,
        saes: config.saes.map((s) => s.id),
        tls_groups: postQuantumGroups ?? 'Node defaults (no post-quantum group in this OpenSSL)',
      },
      'KME listening',
    );
    let closed: Promise<void> | undefined;
    const close = () =>
      (closed ??= (async () => {
        for (const c of closers) await c().catch((err: Error) => log.warn({ err: { message: err.message } }, 'error while closing'));
      })());
    return { app, db, wrapper, ingester, url, close };
  } catch (err) {
    for (const c of closers) await c().catch(() => undefined);
    throw err;
  }
}

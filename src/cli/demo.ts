import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { parseConfig } from '../config/load.js';
import type { Logger } from '../log.js';
import { ensureDemoPki } from '../pki/dev-pki.js';
import { startKms } from '../server.js';

const KME = 'KME_A';
const SAES = ['SAE_A', 'SAE_B', 'SAE_C'];
const STRANGERS = ['SAE_X'];

/**
 * The zero-setup demo: one KME with everything embedded — PGlite (WASM Postgres, reached over its wire protocol
 * so the production `pg` code path runs unchanged), hsm-mock, a development PKI and a simulated QKD link.
 * Writes `<dir>/demo.json` once the KME answers requests. Nothing here is fit for production, and it says so.
 */
export async function runDemo(log: Logger): Promise<{ close: () => Promise<void> }> {
  const dir = resolve(process.env.KMS_DEMO_DIR ?? '.kms-demo');
  const port = Number(process.env.KMS_DEMO_PORT ?? 8443);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`KMS_DEMO_PORT must be a TCP port, not ${process.env.KMS_DEMO_PORT}`);
  mkdirSync(dir, { recursive: true });
  const manifest = join(dir, 'demo.json');
  rmSync(manifest, { force: true }); // a stale manifest must not suggest a KME that is not up yet

  log.warn(
    { dir },
    'DEMO MODE: embedded PGlite (in memory, lost on exit), hsm-mock (NOT an HSM), a generated development PKI and ' +
      'a simulated QKD link. Do not use for real keys; see README "Production" for `kms serve --config`.',
  );
  const pki = await ensureDemoPki(dir, { kmeIds: [KME], saeIds: SAES, strangerIds: STRANGERS });

  const pglite = new PGlite();
  const pgPort = await freePort();
  const pgServer = new PGLiteSocketServer({ db: pglite, host: '127.0.0.1', port: pgPort, maxConnections: 16 });
  await pgServer.start();
  log.info({ port: pgPort }, 'embedded PGlite listening on 127.0.0.1 (demo database)');

  const config = parseConfig(
    {
      kme_id: KME,
      listen: { host: '127.0.0.1', port },
      tls: { cert: pki.kmes[KME]!.cert, key: pki.kmes[KME]!.key, ca: pki.ca },
      // pglite-socket runs every connection on one PGlite session, so interleaved statements from several
      // connections can collide; one connection keeps the demo correct (and it is plenty for a demo).
      database: { pool_size: 1 },
      hsm: { type: 'mock' },
      saes: SAES.map((id) => ({ id })),
      keys: { max_key_count: 20_000 },
      source: { type: 'simulator', rate_bits_per_second: 1_000_000 },
    },
    'demo config',
  );
  let kms;
  try {
    kms = await startKms(config, { log, databaseUrl: `postgresql://postgres@127.0.0.1:${pgPort}/postgres` });
  } catch (err) {
    await pgServer.stop();
    await pglite.close();
    throw err;
  }

  const url = `https://localhost:${(kms.app.server.address() as { port: number }).port}`;
  writeFileSync(
    manifest,
    JSON.stringify({ kmes: [{ id: KME, url, saes: SAES }], ca: pki.ca, saes: pki.saes, strangers: pki.strangers }, null, 2) + '\n',
  );
  log.info({ manifest, url }, 'demo ready: certificates and URL are in demo.json');

  return {
    close: async () => {
      await kms.close();
      await pgServer.stop();
      await pglite.close();
      rmSync(manifest, { force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

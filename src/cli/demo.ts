import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseConfig } from '../config/load.js';
import type { Logger } from '../log.js';
import { ensureDemoPki } from '../pki/dev-pki.js';
import { startKms } from '../server.js';
import { startEmbeddedPostgres } from '../store/embedded-postgres.js';

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

  const pg = await startEmbeddedPostgres();
  log.info({ url: pg.url }, 'embedded PGlite listening (demo database)');

  const config = parseConfig(
    {
      kme_id: KME,
      listen: { host: '127.0.0.1', port },
      tls: { cert: pki.kmes[KME]!.cert, key: pki.kmes[KME]!.key, ca: pki.ca },
      database: { pool_size: 1 }, // see startEmbeddedPostgres
      hsm: { type: 'mock' },
      saes: SAES.map((id) => ({ id })),
      keys: { max_key_count: 20_000 },
      source: { type: 'simulator', rate_bits_per_second: 1_000_000 },
    },
    'demo config',
  );
  let kms;
  try {
    kms = await startKms(config, { log, databaseUrl: pg.url });
  } catch (err) {
    await pg.stop();
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
      await pg.stop();
      rmSync(manifest, { force: true });
    },
  };
}

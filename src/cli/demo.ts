import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { networkConfigs } from '../config/network-builder.js';
import type { Logger } from '../log.js';
import { loadIssued } from '../pki/certificates.js';
import { refreshCrl } from '../pki/crl.js';
import { ensureDemoPki } from '../pki/dev-pki.js';
import { startKms, type RunningKms } from '../server.js';
import { redactUrl, startEmbeddedPostgres } from '../store/embedded-postgres.js';
import { freePort } from '../ports.js';
import { availableBlocks } from '../store/pool.js';

/** Three KMEs in a line, KME_A — KME_B — KME_C; SAE_A and SAE_D on KME_A, SAE_B on KME_B, SAE_C on KME_C. */
export const DEMO_KMES = [
  { id: 'KME_A', saes: ['SAE_A', 'SAE_D'] },
  { id: 'KME_B', saes: ['SAE_B'] },
  { id: 'KME_C', saes: ['SAE_C'] },
] as const;
const STRANGERS = ['SAE_X'];
/** Reads the custody logs of all three KMEs through their auditor APIs (kms audit trace). */
export const DEMO_AUDITOR = 'AUDITOR_1';
/** The demo's operator: `kms sae …` uses its certificate by default (src/admin/client.ts). */
export const DEMO_OPERATOR = 'OPERATOR_1';

/**
 * The zero-setup demo: a QKD network of three KMEs in one process with everything embedded — one real PostgreSQL
 * server from the `embedded-postgres` package with a database per KME (the production engine and `pg` code path),
 * hsm-mock, a development PKI and simulated QKD links: KME_A — KME_B and KME_B — KME_C (seeded device pairs), and a
 * loopback link at KME_A for its two SAEs. So same-KME, direct and relayed pairs all exist.
 *
 * Writes `<dir>/demo.json` once every KME answers requests. Nothing here is fit for production, and it says so.
 */
export async function runDemo(log: Logger): Promise<{ close: () => Promise<void>; reloadTls: (why: string) => Promise<unknown> }> {
  const dir = resolve(process.env.KMS_DEMO_DIR ?? '.kms-demo');
  const base = Number(process.env.KMS_DEMO_PORT ?? 8443);
  if (!Number.isInteger(base) || base < 0 || base > 65533) {
    throw new Error(`KMS_DEMO_PORT must be a TCP port (the three KMEs use it and the next two), not ${process.env.KMS_DEMO_PORT}`);
  }
  // 0: any free ports (tests); the KMEs must know each other's ports before they start.
  const ports = base === 0 ? await Promise.all(DEMO_KMES.map(() => freePort())) : DEMO_KMES.map((_, i) => base + i);
  mkdirSync(dir, { recursive: true });
  const manifest = join(dir, 'demo.json');
  rmSync(manifest, { force: true }); // a stale manifest must not suggest KMEs that are not up yet

  log.warn(
    { dir },
    'DEMO MODE: embedded PostgreSQL (a throwaway server in a temp dir, lost on exit), hsm-mock (NOT an HSM), ' +
      'a generated development PKI and simulated QKD links sharing a seed. Do not use for real keys; see README ' +
      '"Run it for real" for `kms serve --config`.',
  );
  const pki = await ensureDemoPki(dir, {
    kmeIds: DEMO_KMES.map((k) => k.id),
    saeIds: DEMO_KMES.flatMap((k) => [...k.saes]),
    strangerIds: STRANGERS,
    auditorIds: [DEMO_AUDITOR],
    operatorIds: [DEMO_OPERATOR],
  });
  // A CRL the KMEs load (tls.crl), renewed at each start: `kms pki revoke --ca-dir DIR` adds to it, `kms tls reload` applies it.
  const crl = join(dir, 'crl.pem');
  await refreshCrl(await loadIssued(join(dir, 'ca.crt'), join(dir, 'ca.key'), 'demo CA'), crl);
  // The two devices of a simulated link derive their material from a shared seed (a fresh one every run).
  const seedFile = (link: string) => {
    const path = join(dir, `${link}.seed`);
    writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    return path;
  };
  const configs = networkConfigs({
    kmes: DEMO_KMES.map((k, i) => ({ id: k.id, port: ports[i]!, saes: [...k.saes] })),
    links: [
      { id: 'A-local', ends: ['KME_A'], rateBitsPerSecond: 1_000_000 },
      { id: 'A-B', ends: ['KME_A', 'KME_B'], rateBitsPerSecond: 1_000_000, seedFile: seedFile('A-B') },
      { id: 'B-C', ends: ['KME_B', 'KME_C'], rateBitsPerSecond: 1_000_000, seedFile: seedFile('B-C') },
    ],
    pki,
    keys: { max_key_count: 20_000 },
  });
  [...configs.values()].forEach((config, i) => {
    [config.auditors, config.operators] = [[{ id: DEMO_AUDITOR }], [{ id: DEMO_OPERATOR }]];
    config.tls.crl = crl;
    // Probes and Prometheus metrics: 9464, 9465, 9466 (moved along with KMS_DEMO_PORT; any free port for tests).
    config.ops = { listen: { host: '127.0.0.1', port: base === 0 ? 0 : base - 8443 + 9464 + i } };
  });

  const pg = await startEmbeddedPostgres();
  const running: RunningKms[] = [];
  const close = async () => {
    for (const k of running.reverse()) await k.close();
    await pg.stop();
    rmSync(manifest, { force: true });
  };
  try {
    for (const [id, config] of configs) {
      const databaseUrl = await pg.createDatabase(id.toLowerCase());
      log.info({ kme: id, url: redactUrl(databaseUrl) }, 'embedded PostgreSQL database for this KME');
      running.push(await startKms(config, { log: log.child({ kme: id }), databaseUrl }));
    }
  } catch (err) {
    await close();
    throw err;
  }

  await untilServing(running, log);
  const kmes = DEMO_KMES.map((k, i) => ({
    id: k.id,
    url: `https://localhost:${(running[i]!.app.server.address() as { port: number }).port}`,
    metrics: `${running[i]!.opsUrl}/metrics`,
    saes: [...k.saes],
  }));
  const { ca, saes, strangers, auditors, operators } = pki;
  writeFileSync(manifest, JSON.stringify({ kmes, ca, saes, strangers, auditors, operators }, null, 2) + '\n');
  log.info({ manifest, kmes: kmes.map((k) => `${k.id} ${k.url} (${k.saes.join(', ')})`) }, 'demo ready: certificates and URLs are in demo.json');
  return { close, reloadTls: (why) => Promise.all(running.map((k) => k.reloadTls(why))) };
}

/**
 * Waits until every link answers at both ends and holds material each end may hand out, so that the README's
 * commands work as soon as demo.json exists. Gives up waiting (and says so) after 30 s: the KMEs still serve.
 */
async function untilServing(kmes: RunningKms[], log: Logger): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let ready = true;
    for (const k of kmes) {
      for (const link of k.topology.links) {
        const up = link.peerKmeId === undefined || k.network.linkSync.state(link.linkId)?.up === true;
        if (!up || (await availableBlocks(k.db, link.linkId).catch(() => 0)) === 0) ready = false;
      }
    }
    if (ready) return;
    if (Date.now() > deadline) {
      log.warn('links not all serving after 30 s; writing demo.json anyway');
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

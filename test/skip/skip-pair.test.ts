import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../src/config/schema.js';
import { findLeaks } from '../helpers/leak-scan.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { skipGet, type SkipCredentials } from './skip-client.js';

// Issue 14 item 5 across two paired KMEs, as routers at two sites use it: router R_A at KME_A (its SAE_A), router
// R_B at KME_B (SAE_B), each KME knowing the other's router as a remote system. R_A gets a key at its KME over
// SKIP; R_B fetches it by keyId at its own KME, once. Both KMEs record the delivery in their custody logs.

const dir = mkdtempSync(join(tmpdir(), 'kms-skip-pair-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const RA: SkipCredentials = { identity: 'R_A', psk: Buffer.alloc(32, 0xa1) };
const RB: SkipCredentials = { identity: 'R_B', psk: Buffer.alloc(32, 0xb2) };
writeFileSync(join(dir, 'ra.psk'), RA.psk.toString('hex'), { mode: 0o600 });
writeFileSync(join(dir, 'rb.psk'), RB.psk.toString('hex'), { mode: 0o600 });
const skip = (self: [string, string, string], remote: [string, string]): Config['skip'] => ({
  listen: { host: '127.0.0.1', port: 0 },
  min_tls_version: 'TLSv1.2', // this pair also lets a TLS 1.2 router in
  routers: [{ system_id: self[0], sae_id: self[1], psk_file: self[2], psk_format: 'hex' }],
  remote_systems: [{ system_id: remote[0], sae_id: remote[1] }],
});

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({
    kmes: [
      { ...PAIR.kmes[0]!, skip: skip(['R_A', 'SAE_A', join(dir, 'ra.psk')], ['R_B', 'SAE_B']) },
      { ...PAIR.kmes[1]!, skip: skip(['R_B', 'SAE_B', join(dir, 'rb.psk')], ['R_A', 'SAE_A']) },
    ],
    links: PAIR.links,
  });
});
t.teardown(() => net?.close());

t.test('a key got at KME_A by R_A is fetched by R_B at KME_B, once; both custody logs have it', async (t) => {
  const urlA = net.kme('KME_A').kms.skipUrl!;
  const urlB = net.kme('KME_B').kms.skipUrl!;
  t.same((await skipGet(urlA, RA, '/capabilities')).body.remoteSystemID, ['R_B']);
  t.equal((await skipGet(urlA, RB, '/capabilities').catch((e: Error) => e)) instanceof Error, true, "R_B's PSK is not known at KME_A");

  const got = await skipGet(urlA, RA, '/key?remoteSystemID=R_B&size=256');
  t.equal(got.status, 200, JSON.stringify(got.body.message ?? ''));
  const { keyId, key } = got.body as { keyId: string; key: string };
  const fetched = await skipGet(urlB, { ...RB, maxVersion: 'TLSv1.2' }, `/key/${keyId}?remoteSystemID=R_A`);
  t.same(fetched, { status: 200, body: { keyId, key } }, 'the same key at the other site (this time over TLS 1.2 PSK)');
  t.equal((await skipGet(urlB, RB, `/key/${keyId}?remoteSystemID=R_A`)).status, 404, 'fetched once');

  const etsiId = `${keyId.slice(0, 8)}-${keyId.slice(8, 12)}-${keyId.slice(12, 16)}-${keyId.slice(16, 20)}-${keyId.slice(20)}`;
  const custody = [
    ['KME_A', 'deliver_master', 'sae:SAE_A', 'skip-psk:R_A'],
    ['KME_B', 'deliver_slave', 'sae:SAE_B', 'skip-psk:R_B'],
  ] as const;
  for (const [kme, operation, actor, cert] of custody) {
    const rows = await net.kme(kme).query(`SELECT actor, actor_cert FROM audit_event WHERE $1 = ANY(key_ids) AND outcome = 'ok' AND operation = $2`, [etsiId, operation]);
    t.same(rows, [{ actor, actor_cert: cert }], `${kme}: ${operation} to ${actor}, authenticated by ${cert}`);
    t.same(findLeaks([Buffer.from(key, 'hex')], { texts: [{ where: `${kme} log`, text: net.kme(kme).logs() }], bytes: [] }), []);
  }
});

import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { SkipRouters } from '../../src/skip/routers.js';
import { databaseHaystack, findLeaks } from '../helpers/leak-scan.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { skipGet, type SkipCredentials } from './skip-client.js';

// Issue 14 item 5: Cisco SKIP on the KME (src/skip/). One KME with two routers as two of its SAEs (R1 = SAE_A,
// R2 = SAE_B), each with its own PSK; a client with the draft's request shapes over real TLS 1.3-PSK sockets.
// R1 gets a key for R2, R2 fetches it by keyId once; the custody log has both deliveries, the logs no key bytes.

const dir = mkdtempSync(join(tmpdir(), 'kms-skip-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const PSK_R1 = Buffer.from('5b1c2a7d9e0f11223344556677889900aabbccddeeff00112233445566778899', 'hex');
const PSK_R2 = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf', 'hex');
writeFileSync(join(dir, 'r1.psk'), PSK_R1.toString('hex') + '\n', { mode: 0o600 });
writeFileSync(join(dir, 'r2.psk'), 'a text pre-shared key for R2', { mode: 0o600 });
const R1: SkipCredentials = { identity: 'R1', psk: PSK_R1 };
const R2: SkipCredentials = { identity: 'router-2', psk: Buffer.from('a text pre-shared key for R2') };

const skipConfig = {
  listen: { host: '127.0.0.1', port: 0 },
  routers: [
    { system_id: 'R1', sae_id: 'SAE_A', psk_file: join(dir, 'r1.psk') },
    { system_id: 'R2', sae_id: 'SAE_B', psk_identity: 'router-2', psk_file: join(dir, 'r2.psk'), psk_format: 'text' },
  ],
  remote_systems: [{ system_id: 'R3-far', sae_id: 'SAE_Z' }],
};

let k: TestKms;
let url: string;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 200 }, skip: skipConfig });
  url = k.kms.skipUrl!;
});
t.teardown(() => k?.close());

const delivered: Buffer[] = [];

t.test('capabilities name the calling router and the systems it may share keys with', async (t) => {
  const r1 = await skipGet(url, R1, '/capabilities');
  t.same(r1, { status: 200, body: { entropy: true, key: true, algorithm: 'QKD (ETSI GS QKD 014 key pool)', localSystemID: 'R1', remoteSystemID: ['R2', 'R3-far'] } });
  const r2 = await skipGet(url, R2, '/capabilities');
  t.equal(r2.body.localSystemID, 'R2');
  t.same(r2.body.remoteSystemID, ['R1', 'R3-far']);
});

t.test('a key got at R1 is fetched by its keyId at R2, once', async (t) => {
  const got = await skipGet(url, R1, '/key?remoteSystemID=R2');
  t.equal(got.status, 200);
  const keyId = got.body.keyId as string;
  const key = got.body.key as string;
  t.match(keyId, /^[0-9a-f]{32}$/, 'keyId: 128 bits, hex');
  t.match(key, /^[0-9a-f]{64}$/, 'key: 256 bits (the KME key_size), hex');
  delivered.push(Buffer.from(key, 'hex'));

  const own = await skipGet(url, R1, `/key/${keyId}?remoteSystemID=R2`);
  t.equal(own.status, 401, 'R1 is not the receiver of its own key (as dec_keys by the master SAE: 401)');
  t.comment(`R1 fetching its own key: ${own.body.message}`);
  const fetched = await skipGet(url, R2, `/key/${keyId.toUpperCase()}?remoteSystemID=R1`);
  t.same(fetched, { status: 200, body: { keyId, key } }, 'R2 gets the same key');
  const again = await skipGet(url, R2, `/key/${keyId}?remoteSystemID=R1`);
  t.equal(again.status, 404, 'fetched once: a second fetch is refused');
  t.match(again.body.message, `key ${keyId} not found: unknown, already fetched`);

  const big = await skipGet(url, R2, '/key?remoteSystemID=R1&size=512');
  t.match(big.body.key, /^[0-9a-f]{128}$/, 'size in bits');
  delivered.push(Buffer.from(big.body.key as string, 'hex'));
  const back = await skipGet(url, R1, `/key/${big.body.keyId}?remoteSystemID=R2`);
  t.equal(back.body.key, big.body.key, 'the other direction too');

  // The same key in the ETSI world: SKIP keyId = the key_ID's 16 bytes.
  const { rows } = await k.kms.db.query(`SELECT key_id::text AS id FROM qkd_key WHERE replace(key_id::text, '-', '') = $1`, [keyId]);
  t.equal(rows.length, 1, 'keyId is an ETSI key_ID of the pool');
});

t.test('refused requests: clear errors that name the bad field', async (t) => {
  const unknown = await skipGet(url, R1, '/key?remoteSystemID=R9');
  t.same(unknown, { status: 400, body: { message: 'remoteSystemID R9 is unknown here; known: R2, R3-far' } });
  t.equal((await skipGet(url, R1, '/key?remoteSystemID=R1')).status, 400, 'not with itself');
  t.match((await skipGet(url, R1, '/key')).body.message, /remoteSystemID/, 'remoteSystemID is required');
  t.match((await skipGet(url, R1, '/key?remoteSystemID=R2&size=12')).body.message, 'size shall be a multiple of 8');
  t.match((await skipGet(url, R2, '/key/xyz?remoteSystemID=R1')), { status: 400, body: { message: /keyId "xyz" is not 32 hex digits/ } });
  t.match((await skipGet(url, R2, '/key/00112233445566778899aabbccddeeff?remoteSystemID=R1')), { status: 404 });
  // R3-far names an SAE that is in no KME's network here: the key service refuses it as it would over ETSI 014.
  t.same(await skipGet(url, R1, '/key?remoteSystemID=R3-far'), { status: 400, body: { message: 'slave SAE SAE_Z is not registered at this KME or in its network' } });
});

t.test('the PSK authenticates: a wrong key or an unknown identity fails the TLS handshake', async (t) => {
  await t.rejects(skipGet(url, { identity: 'R1', psk: PSK_R2 }, '/capabilities'), /alert|handshake|EPROTO|ECONNRESET/i);
  await t.rejects(skipGet(url, { identity: 'R7', psk: PSK_R1 }, '/capabilities'), /alert|handshake|EPROTO|ECONNRESET/i);
  await t.rejects(skipGet(url, { ...R1, maxVersion: 'TLSv1.2' }, '/capabilities'), /alert|version|EPROTO|ECONNRESET/i, 'TLS 1.2 refused (min_tls_version TLSv1.3)');
  t.match(k.logs(), 'SKIP handshake refused', 'the KME logs refused handshakes');
});

t.test('entropy: hex of the requested bits', async (t) => {
  t.match(await skipGet(url, R1, '/entropy'), { status: 200, body: { minentropy: 256, randomStr: /^[0-9a-f]{64}$/ } });
  t.match(await skipGet(url, R1, '/entropy?minentropy=1024'), { status: 200, body: { minentropy: 1024, randomStr: /^[0-9a-f]{256}$/ } });
  t.equal((await skipGet(url, R1, '/entropy?minentropy=12')).status, 400);
});

t.test('a suspended SAE stops its router at once; resumed, it gets keys again', async (t) => {
  const operator = k.client('OPERATOR_1');
  t.equal((await operator.post('/admin/v1/saes/SAE_B/suspend', { reason: 'SKIP test' })).status, 200);
  t.same(await skipGet(url, R2, '/key?remoteSystemID=R1'), { status: 401, body: { message: 'SAE SAE_B of router R2 is suspended' } });
  t.equal((await operator.post('/admin/v1/saes/SAE_B/resume', { reason: 'SKIP test' })).status, 200);
  const again = await skipGet(url, R2, '/key?remoteSystemID=R1');
  t.equal(again.status, 200);
  delivered.push(Buffer.from(again.body.key as string, 'hex'));
});

t.test('SKIP deliveries are custody events like ETSI ones; no key bytes in the logs or the database', async (t) => {
  await k.kms.refusals.flush();
  const c = new pg.Client({ connectionString: k.db.url });
  await c.connect();
  t.teardown(() => c.end());
  const { rows } = await c.query<{ operation: string; outcome: string; actor: string; actor_cert: string; n: number }>(
    `SELECT operation, outcome, actor, actor_cert, count(*)::int AS n FROM audit_event WHERE actor_cert LIKE 'skip-psk:%' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3`,
  );
  const ok = rows.filter((r) => r.outcome === 'ok').map((r) => `${r.operation} ${r.actor} ${r.actor_cert} ${r.n}`);
  t.ok(ok.some((r) => /^\S+ sae:SAE_A skip-psk:R1 \d+$/.test(r)), `R1's deliveries under SAE_A: ${ok.join('; ')}`);
  t.ok(ok.some((r) => /^\S+ sae:SAE_B skip-psk:router-2 \d+$/.test(r)), "R2's deliveries under SAE_B");
  t.ok(rows.some((r) => r.outcome === 'refused'), 'refusals are audited too');

  t.equal(delivered.length, 3);
  const hay = (await databaseHaystack(k.db.url)).hay;
  hay.texts.push({ where: 'KME log', text: k.logs() });
  t.same(findLeaks(delivered, hay), []);
});

t.test('a router with a client certificate (skip.tls) instead of a PSK', async (t) => {
  const pki = k.pki;
  const k2 = await startTestKms({
    keys: { max_key_count: 50 },
    skip: {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { cert: pki.kmes.KME_T!.cert, key: pki.kmes.KME_T!.key, ca: pki.ca },
      routers: [
        { system_id: 'R1', sae_id: 'SAE_A', psk_file: join(dir, 'r1.psk') },
        { system_id: 'R3', sae_id: 'SAE_C', certificate_cn: 'SAE_C' },
      ],
    },
  });
  t.teardown(() => k2.close());
  const url2 = k2.kms.skipUrl!;
  const withCert = (files: { cert: string; key: string }) => ({ cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(pki.ca) });
  const r3 = withCert(pki.saes.SAE_C!);
  t.same((await skipGet(url2, r3, '/capabilities')).body.localSystemID, 'R3', 'the certificate CN names the router');
  const got = await skipGet(url2, r3, '/key?remoteSystemID=R1');
  t.equal(got.status, 200);
  const fetched = await skipGet(url2, R1, `/key/${got.body.keyId}?remoteSystemID=R3`);
  t.equal(fetched.body.key, got.body.key, 'a PSK router and a certificate router share a key on the same listener');
  const stranger = await skipGet(url2, withCert(pki.strangers.SAE_X!), '/capabilities');
  t.same(stranger, { status: 401, body: { message: 'no router identified on this connection (pre-shared key, or a certificate of skip.tls.ca with the certificate_cn of a router)' } }, 'a certificate of the CA but of no router: 401');
  const { rows } = await k2.kms.db.query(`SELECT actor_cert FROM audit_event WHERE actor = 'sae:SAE_C' AND operation = 'deliver_master' AND outcome = 'ok'`);
  t.match((rows[0] as { actor_cert: string }).actor_cert, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, "the custody log has the router certificate's SHA-256 fingerprint");
  delivered.push(Buffer.from(got.body.key as string, 'hex'));
  t.same(findLeaks([Buffer.from(got.body.key as string, 'hex')], { texts: [{ where: 'KME log', text: k2.logs() }], bytes: [] }), []);
});

t.test('config: PSK files are checked at boot, naming the field', async (t) => {
  writeFileSync(join(dir, 'short.psk'), '00112233');
  writeFileSync(join(dir, 'nothex.psk'), 'zz'.repeat(20));
  const config = (file: string) => ({ listen: { host: '127.0.0.1', port: 0 }, min_tls_version: 'TLSv1.3' as const, routers: [{ system_id: 'R1', sae_id: 'SAE_A', psk_file: join(dir, file), psk_format: 'hex' as const }], remote_systems: [] });
  t.throws(() => new SkipRouters(config('short.psk')), { name: 'ConfigError', message: /skip\.routers\[0\]\.psk_file: the key in .* has 4 bytes; at least 16/ });
  t.throws(() => new SkipRouters(config('nothex.psk')), { name: 'ConfigError', message: /must hold the key as hex digits/ });
  t.throws(() => new SkipRouters(config('missing.psk')), { name: 'ConfigError', message: /cannot read .*missing\.psk: ENOENT/ });
  const routers = (router: Record<string, unknown>) => ({ ...config('short.psk'), routers: [{ system_id: 'R1', sae_id: 'SAE_A', psk_format: 'hex' as const, ...router }] });
  t.throws(() => new SkipRouters(routers({})), { name: 'ConfigError', message: 'skip.routers[0]: give either psk_file or certificate_cn' });
  t.throws(() => new SkipRouters(routers({ psk_file: join(dir, 'r1.psk'), certificate_cn: 'R1' })), { name: 'ConfigError', message: 'skip.routers[0]: give either psk_file or certificate_cn' });
  t.throws(() => new SkipRouters(routers({ certificate_cn: 'R1' })), { name: 'ConfigError', message: /skip\.routers\[0\]\.certificate_cn: routers with certificates need skip\.tls/ });
});

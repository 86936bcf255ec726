import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfigFile, parseConfig, readSecret } from '../../src/config/load.js';

const minimal = { kme_id: 'KME_A', tls: { cert: 'c.crt', key: 'c.key', ca: 'ca.crt' }, hsm: { type: 'mock' }, saes: [{ id: 'SAE_A' }] };

t.test('defaults fill everything the ETSI status needs', async (t) => {
  const c = parseConfig(minimal);
  t.same(c.keys, {
    key_size: 256,
    min_key_size: 64,
    max_key_size: 1024,
    max_key_count: 100000,
    max_key_per_request: 128,
    max_SAE_ID_count: 8,
    key_ttl_seconds: 300,
  });
  t.same(c.listen, { host: '0.0.0.0', port: 8443, handshake_timeout_ms: 10_000, headers_timeout_ms: 10_000, request_timeout_ms: 30_000, keep_alive_timeout_ms: 30_000 });
  t.equal(c.links.length, 1, 'one link by default');
  t.match(c.links[0], { link_id: 'KME_A-loopback', source: { type: 'simulator' } }, 'a loopback simulator');
  t.same(c.peers, []);
  t.same(c.requests, { deadline_ms: 5000, max_queued: 2048, max_event_loop_delay_ms: 1000 });
});

const bad: Array<[string, unknown, RegExp]> = [
  ['kme_id with a space', { ...minimal, kme_id: 'KME A' }, /\/kme_id: must match pattern/],
  ['missing tls.ca', { ...minimal, tls: { cert: 'a', key: 'b' } }, /\/tls: must have required properties ca/],
  ['pkcs11 without module', { ...minimal, hsm: { type: 'pkcs11', token_label: 'x' } }, /\/hsm: must have required properties module/],
  ['unknown hsm type', { ...minimal, hsm: { type: 'cloud' } }, /\/hsm\/type: must be "pkcs11" or "mock"/],
  ['string key size', { ...minimal, keys: { max_key_size: 'big' } }, /\/keys\/max_key_size: must be integer/],
  ['key_size not a multiple of 8', { ...minimal, keys: { key_size: 100 } }, /\/keys\/key_size: must be a multiple of 8/],
  ['min above key_size', { ...minimal, keys: { min_key_size: 512 } }, /\/keys\/min_key_size: must not exceed key_size/],
  ['max below key_size', { ...minimal, keys: { max_key_size: 128 } }, /\/keys\/max_key_size: must be at least key_size/],
  ['duplicate SAE', { ...minimal, saes: [{ id: 'SAE_A' }, { id: 'SAE_A' }] }, /\/saes\/1\/id: duplicate SAE ID SAE_A/],
  ['SAE ID with a slash', { ...minimal, saes: [{ id: 'a/b' }] }, /\/saes\/0\/id: must match pattern/],
  ['no SAEs', { ...minimal, saes: [] }, /\/saes: must not have fewer than 1 items|\/saes: must NOT have fewer than 1 items/],
  ['unknown field', { ...minimal, listen: { port: 1, hots: 'x' } }, /\/listen: must not have additional properties/i],
  ['header limit above the request limit', { ...minimal, listen: { headers_timeout_ms: 60_000, request_timeout_ms: 30_000 } }, /\/listen\/headers_timeout_ms: must not exceed request_timeout_ms/],
  ['a handshake limit under 100 ms', { ...minimal, listen: { handshake_timeout_ms: 10 } }, /\/listen\/handshake_timeout_ms: must be >= 100/],
  ['a policy link_failure that is neither mode', { ...minimal, policies: [{ saes: ['SAE_A', 'SAE_B'], link_failure: 'pqc' }] }, /\/policies\/0\/link_failure: must be one of "fail_closed", "pqc_fallback"/],
];

for (const [name, raw, message] of bad) {
  t.test(`refused: ${name}`, async (t) => {
    t.throws(() => parseConfig(raw, 'kms.json'), { name: 'ConfigError', message });
  });
}

const net = {
  ...minimal,
  saes: [{ id: 'SAE_A' }],
  links: [{ link_id: 'A-B', peer_kme_id: 'KME_B', source: { type: 'simulator', seed_env: 'SEED' } }],
  peers: [{ kme_id: 'KME_B', url: 'https://kme-b.example.net:8443' }],
  network: { remote_saes: [{ sae_id: 'SAE_B', kme_id: 'KME_B' }, { sae_id: 'SAE_C', kme_id: 'KME_C' }], routes: [{ kme_id: 'KME_C', via: 'KME_B' }] },
};

t.test('a network config: defaults and derived fields', async (t) => {
  const c = parseConfig(net);
  t.equal(c.links[0]!.primary_kme_id, 'KME_A', 'the lower KME ID is the primary by default');
  t.same(c.network.routes, [{ kme_id: 'KME_C', via: 'KME_B' }]);
  t.equal(c.network.peer_timeout_ms, 3000);
});

const badNetworks: Array<[string, unknown, RegExp]> = [
  ['the old one-link form', { ...minimal, source: { type: 'simulator' } }, /\/source: the key source now belongs to a link/],
  ['a link to a KME that is not a peer', { ...net, peers: [] }, /\/links\/0\/peer_kme_id: KME_B is not in peers/],
  ['a peer that is this KME', { ...net, peers: [...net.peers, { kme_id: 'KME_A', url: 'https://x' }] }, /\/peers\/1\/kme_id: KME_A is this KME/],
  ['an SAE and a peer with one certificate name', { ...net, saes: [{ id: 'SAE_A', certificate_cn: 'KME_B' }] }, /certificate CN KME_B is also SAE SAE_A's/],
  ['a route through a peer without a link', { ...net, links: [{ link_id: 'L', source: { type: 'simulator' } }] }, /\/network\/routes\/0\/via: KME_B is not a peer this KME has a link with/],
  ['a remote SAE nobody can reach', { ...net, network: { remote_saes: [{ sae_id: 'SAE_Z', kme_id: 'KME_Z' }] } }, /\/network\/remote_saes\/0\/kme_id: no way to KME_Z/],
  ['a remote SAE that is local', { ...net, network: { remote_saes: [{ sae_id: 'SAE_A', kme_id: 'KME_B' }] } }, /SAE_A is an SAE of this KME/],
  ['a primary that is neither end', { ...net, links: [{ ...net.links[0], primary_kme_id: 'KME_Q' }] }, /\/links\/0\/primary_kme_id: must be KME_A or KME_B/],
  ['two links with one ID', { ...net, links: [net.links[0], net.links[0]] }, /\/links\/1\/link_id: duplicate link A-B/],
  ['an unknown device driver', { ...net, links: [{ link_id: 'L', source: { type: 'quantum-magic' } }] }, /\/links\/0\/source\/type: must be one of "simulator", "etsi014", "file"/],
  ['an etsi014 driver without its URL', { ...net, links: [{ link_id: 'L', source: { type: 'etsi014', ca: 'a', cert: 'b', key: 'c', peer_sae_id: 'X' } }] }, /\/links\/0\/source: must have required properties url/],
  ['a device URL that is not https', { ...net, links: [{ link_id: 'L', source: { type: 'etsi014', url: 'http://x', ca: 'a', cert: 'b', key: 'c', peer_sae_id: 'X' } }] }, /\/links\/0\/source\/url: must match pattern/],
];

for (const [name, raw, message] of badNetworks) {
  t.test(`refused: ${name}`, async (t) => {
    t.throws(() => parseConfig(raw, 'kms.json'), { name: 'ConfigError', message });
  });
}

t.test('files: relative paths resolve against the config file; bad JSON names the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kms-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'kms.json');
  writeFileSync(file, JSON.stringify(minimal));
  t.equal(loadConfigFile(file).tls.ca, join(dir, 'ca.crt'));
  writeFileSync(file, '{"kme_id": ');
  t.throws(() => loadConfigFile(file), { message: new RegExp(`config file ${file} is not valid JSON`) });
  t.throws(() => loadConfigFile(join(dir, 'nope.json')), { message: /cannot read config file .*nope\.json: ENOENT/ });
});

t.test('secrets come from the environment or a file, and missing ones are named', async (t) => {
  process.env.KMS_TEST_SECRET = 's3cret';
  t.equal(readSecret('the PIN', 'KMS_TEST_SECRET'), 's3cret');
  delete process.env.KMS_TEST_SECRET;
  t.throws(() => readSecret('the PIN', 'KMS_TEST_SECRET'), new ConfigError('the PIN is not set: put it in the environment variable KMS_TEST_SECRET, or its file\'s path in KMS_TEST_SECRET_FILE'));
  const dir = mkdtempSync(join(tmpdir(), 'kms-secret-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'pin'), '1234\n');
  t.equal(readSecret('the PIN', 'UNUSED', join(dir, 'pin')), '1234', 'trailing newline dropped');
  // Container secrets and systemd credentials: the variable's name with _FILE holds the file's path, and wins.
  writeFileSync(join(dir, 'db-url'), 'postgresql://kms@db/kms\n');
  process.env.KMS_TEST_SECRET = 'from-env';
  process.env.KMS_TEST_SECRET_FILE = join(dir, 'db-url');
  t.teardown(() => { delete process.env.KMS_TEST_SECRET; delete process.env.KMS_TEST_SECRET_FILE; });
  t.equal(readSecret('the database URL', 'KMS_TEST_SECRET'), 'postgresql://kms@db/kms');
  t.equal(readSecret('the PIN', 'KMS_TEST_SECRET', join(dir, 'pin')), '1234', "the config's own file wins over both");
  process.env.KMS_TEST_SECRET_FILE = join(dir, 'missing');
  t.throws(() => readSecret('the database URL', 'KMS_TEST_SECRET'), new ConfigError(`cannot read the database URL from ${join(dir, 'missing')}: ENOENT`));
});

t.test('coordination: a Redis URL from the environment, or sentinels with the master name', async (t) => {
  t.equal(parseConfig({ ...minimal, coordination: { redis: {} } }).coordination?.redis?.url_env, 'KMS_REDIS_URL');
  const sentinel = parseConfig({ ...minimal, coordination: { redis: { sentinels: [{ host: 'redis-s1', port: 26379 }], master_name: 'qkms' } } });
  t.same(sentinel.coordination?.redis?.sentinels, [{ host: 'redis-s1', port: 26379 }]);
  t.throws(() => parseConfig({ ...minimal, coordination: { redis: { sentinels: [{ host: 'redis-s1', port: 26379 }] } } }, 'kms.json'), {
    name: 'ConfigError',
    message: /\/coordination\/redis: sentinels and master_name go together/,
  });
  t.throws(() => parseConfig({ ...minimal, requests: { per_sae: { max: 0 } } }, 'kms.json'), { name: 'ConfigError', message: /\/requests\/per_sae\/max/ });
});

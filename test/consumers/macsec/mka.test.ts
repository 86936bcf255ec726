import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { macsecMkaFactory, MKA_CONFIG_FILE } from '../../../src/consumers/macsec/mka-connector.js';
import { connectorFactory } from '../../../src/consumers/registry.js';
import { findLeaks } from '../../helpers/leak-scan.js';
import { KEY16, KEY32, KEY32_B, KEY_ID_1, netnsSkipReason, netnsWithVeth, recordingCommand, testContext, which } from './fixtures.js';

// Issue 14 item 4, MACsec keyed by MKA through wpa_supplicant (src/consumers/macsec/mka-connector.ts). This kernel
// has no MACsec, so the secured port itself cannot come up here; what is tested for real: the exact config text,
// that wpa_supplicant 2.10 parses it (it then stops at "macsec kernel module not present?"), and the reload of a
// running wpa_supplicant through its control socket (the `wired` driver, which runs without the MACsec module).

const header = (ctrl: string) => [
  '# Written by the kms agent for binding "link-a" (macsec-mka). Replaced at each rotation: do not edit.',
  `ctrl_interface=${ctrl}`,
  'eapol_version=3',
  'ap_scan=0',
];
const expectedWithKey = (ctrl: string, priority: number, ckn: string, cak: string, keyId: string) =>
  [
    ...header(ctrl),
    `# QKD key_ID ${keyId}`,
    'network={',
    '\tkey_mgmt=NONE',
    '\teapol_flags=0',
    '\tmacsec_policy=1',
    '\tmacsec_integ_only=0',
    '\tmacsec_replay_protect=0',
    '\tmacsec_replay_window=0',
    '\tmacsec_port=1',
    `\tmka_priority=${priority}`,
    `\tmka_ckn=${ckn}`,
    `\tmka_cak=${cak}`,
    '}',
    '',
  ].join('\n');
const CKN_1 = '0f1e2d3c4b5a49788796a5b4c3d2e1f0';
const WPA = which('wpa_supplicant');
const CLI = which('wpa_cli');
const noNetns = netnsSkipReason();
const skipParse = !WPA ? 'wpa_supplicant is not installed (apt-get install wpasupplicant; .ci/run does): the config is not parsed here' : noNetns;
const skipReload = !WPA || !CLI ? 'wpa_supplicant/wpa_cli are not installed (apt-get install wpasupplicant; .ci/run does)' : noNetns;

t.test('settings: required fields, key length, unknown names, all refused naming the field', async (t) => {
  const { ctx, cleanup } = testContext();
  t.teardown(cleanup);
  t.throws(() => macsecMkaFactory.create({ cak_bytes: 32 }, ctx), { name: 'ConnectorConfigError', field: 'connector.interface' });
  t.throws(() => macsecMkaFactory.create({ interface: 'eth1' }, ctx), { name: 'ConnectorConfigError', field: 'connector.cak_bytes', message: /is required \(16 or 32\)/ });
  t.throws(() => macsecMkaFactory.create({ interface: 'eth1', cak_bytes: 24 }, ctx), { name: 'ConnectorConfigError', field: 'connector.cak_bytes', message: /must be 16 or 32/ });
  t.throws(() => macsecMkaFactory.create({ interface: 'eth1', cak_bytes: 16, mka_cak: 'x' }, ctx), { name: 'ConnectorConfigError', field: 'connector.mka_cak', message: /unknown setting/ });
  t.throws(() => macsecMkaFactory.create({ interface: 'eth 1', cak_bytes: 16 }, ctx), { name: 'ConnectorConfigError', field: 'connector.interface' });
  t.throws(() => macsecMkaFactory.create({ interface: 'eth1', cak_bytes: 16, mka_priority: 256 }, ctx), { name: 'ConnectorConfigError', field: 'connector.mka_priority' });
  t.equal((await connectorFactory('macsec-mka', 'bindings[0].connector.type')).type, 'macsec-mka', 'registered');
});

t.test('the config file: 0600 in the work dir, no network before the first key, exact text with a key', async (t) => {
  const { ctx, dir, cleanup, logText } = testContext('slave');
  t.teardown(cleanup);
  const wpaCli = recordingCommand(dir, 'wpa_cli', null); // a mock: only the file is under test here
  const c = macsecMkaFactory.create({ interface: 'eth1', cak_bytes: 32, ctrl_interface: '/run/wpa_supplicant', wpa_cli: wpaCli.path }, ctx);
  const path = join(dir, MKA_CONFIG_FILE);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.equal(readFileSync(path, 'utf8'), [...header('/run/wpa_supplicant'), '# no key in service: no MKA participant, the secured port is down', ''].join('\n'));

  // The mock answers nothing, so the reload is refused: the connector says so and the file already holds the key.
  await t.rejects(c.activate(KEY32), /refused to reload .*wpa_supplicant-mka\.conf \(answered ""\)/);
  t.equal(readFileSync(path, 'utf8'), expectedWithKey('/run/wpa_supplicant', 32, CKN_1, KEY32.key.toString('hex'), KEY_ID_1), 'slave priority 32, CKN = key_ID bytes, CAK = key');
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same(wpaCli.argv(), [['-p', '/run/wpa_supplicant', '-i', 'eth1', 'reconfigure']]);

  await t.rejects(c.stage(KEY16), /key 0f1e2d3c-.* has 16 bytes but connector\.cak_bytes says 32/, 'a key of the wrong length is refused');
  const err = await c.stage(KEY16).catch((e: Error) => e);
  t.same(findLeaks([KEY16.key, KEY32.key], { texts: [{ where: 'error', text: String(err) }, { where: 'log', text: logText() }, { where: 'argv', text: wpaCli.argv().flat().join(' ') }, { where: 'env', text: wpaCli.env() }], bytes: [] }), []);
});

t.test('wpa_supplicant parses the generated config (and stops only for want of the MACsec module)', { skip: skipParse }, async (t) => {
  const wpa = WPA!;
  const ns = netnsWithVeth('kmsmka1', ['mka0', 'mka1']);
  if (!ns.ok) throw new Error(ns.why);
  t.teardown(ns.remove);
  const { ctx, dir, cleanup } = testContext();
  t.teardown(cleanup);
  const conf = join(dir, 'parsed.conf');
  const run = (file: string) => spawnSync('ip', ['netns', 'exec', 'kmsmka1', wpa, '-D', 'macsec_linux', '-i', 'mka0', '-c', file, '-dd'], { encoding: 'utf8', timeout: 20_000 });

  for (const key of [KEY32, KEY16]) {
    const c = macsecMkaFactory.create({ interface: 'mka0', cak_bytes: key.key.length, ctrl_interface: join(dir, 'ctrl'), wpa_cli: '/bin/false' }, ctx);
    await c.activate(key).catch(() => {}); // writes the file; no wpa_supplicant runs to reload it
    writeFileSync(conf, readFileSync(join(dir, MKA_CONFIG_FILE)), { mode: 0o600 });
    const out = run(conf).stdout;
    t.match(out, `MKA-CAK - hexdump(len=${key.key.length}): [REMOVED]`, `${key.key.length}-byte CAK read`);
    t.match(out, 'MKA-CKN - hexdump(len=16): [REMOVED]');
    t.match(out, 'macsec_policy=1 (0x1)');
    t.match(out, 'mka_priority=16 (0x10)');
    t.match(out, 'macsec kernel module not present?', 'stopped at the kernel, after the config');
    t.notMatch(out, /failed to parse|Invalid|unknown network field/i);
    t.same(findLeaks([key.key], { texts: [{ where: 'wpa_supplicant -dd', text: out }], bytes: [] }), [], 'wpa_supplicant does not print the CAK');
  }

  // The control: the same check fails on a config wpa_supplicant cannot read (a CAK one nibble short).
  writeFileSync(conf, readFileSync(join(dir, MKA_CONFIG_FILE), 'utf8').replace(/mka_cak=.(\w+)/, 'mka_cak=$1'));
  const bad = run(conf).stdout;
  t.match(bad, /Invalid MKA-CAK|failed to parse/i);
  t.notMatch(bad, 'macsec kernel module not present?');
});

t.test('rotation against a running wpa_supplicant: reload through its control socket, fail closed, keys never in argv or logs', { skip: skipReload }, async (t) => {
  const wpa = WPA!;
  const cli = CLI!;
  const ns = netnsWithVeth('kmsmka2', ['mka0', 'mka1']);
  if (!ns.ok) throw new Error(ns.why);
  t.teardown(ns.remove);
  const { ctx, dir, cleanup, logText } = testContext();
  t.teardown(cleanup);
  const ctrl = join(dir, 'ctrl');
  mkdirSync(ctrl, { mode: 0o700 });
  const wpaCli = recordingCommand(dir, 'wpa_cli', cli);
  const c = macsecMkaFactory.create({ interface: 'mka0', cak_bytes: 32, ctrl_interface: ctrl, wpa_cli: wpaCli.path }, ctx);

  // `wired` rather than `macsec_linux`: the same config and control interface, without the kernel module that is
  // missing here, so the daemon stays up and its reloads can be watched.
  const daemon = spawn('ip', ['netns', 'exec', 'kmsmka2', wpa, '-D', 'wired', '-i', 'mka0', '-c', join(dir, MKA_CONFIG_FILE), '-dd'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  daemon.stdout.on('data', (d: Buffer) => (out += d.toString()));
  daemon.stderr.on('data', (d: Buffer) => (out += d.toString()));
  t.teardown(() => void daemon.kill('SIGTERM'));
  const until = async (what: string, ok: () => boolean) => {
    for (const end = Date.now() + 10_000; !ok(); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > end || daemon.exitCode !== null) throw new Error(`wpa_supplicant: no ${what}:\n${out}`);
    }
  };
  await until('control socket', () => existsSync(join(ctrl, 'mka0')));
  const reads = () => out.split('Reading configuration file').length - 1;
  const network = (field: string) => spawnSync(cli, ['-p', ctrl, '-i', 'mka0', 'get_network', '0', field], { encoding: 'utf8' }).stdout.trim();
  // The socket can appear before the daemon's -dd output about reading its file has come through the pipe (a CI run
  // on a busy machine read 0 here): wait for that output, then check the file was read once, not twice.
  await until('first configuration read', () => reads() >= 1);
  t.equal(reads(), 1, 'the configuration was read once');
  t.equal(network('macsec_policy'), 'FAIL', 'no network before the first key');

  await c.stage(KEY32); // ping
  await c.activate(KEY32);
  await until('reload', () => reads() === 2 && out.includes('Reconfiguration completed'));
  t.equal(network('macsec_policy'), '1', 'the MKA network is loaded');
  t.equal(network('mka_ckn'), '*', 'wpa_supplicant holds a CKN (it shows only that one is set)');

  await c.activate(KEY32); // idempotent: the same key again reloads nothing
  await c.stage(KEY32_B);
  await c.activate(KEY32_B);
  await c.retire(KEY32.keyId);
  await until('second reload', () => reads() === 3);
  t.match(readFileSync(join(dir, MKA_CONFIG_FILE), 'utf8'), `mka_ckn=${KEY32_B.keyId.replace(/-/g, '')}`);

  await c.shutDown('test: no key young enough');
  await until('third reload', () => reads() === 4);
  await until('network removed', () => network('macsec_policy') === 'FAIL');
  t.match(logText(), /failed closed: no MKA participant/);

  t.same(wpaCli.argv().map((a) => a.at(-1)), ['ping', 'reconfigure', 'ping', 'reconfigure', 'reconfigure'], 'wpa_cli asked for ping and reconfigure only');
  // `ip netns exec` execs wpa_supplicant: the child's pid is the daemon's, whose command line and environment anyone
  // on the host may read.
  const proc = (what: string) => readFileSync(`/proc/${daemon.pid}/${what}`, 'latin1');
  t.match(proc('cmdline'), 'wpa_supplicant');
  const keys = [KEY32.key, KEY32_B.key];
  t.same(findLeaks(keys, { texts: [
    { where: 'wpa_cli argv', text: wpaCli.argv().flat().join(' ') },
    { where: 'wpa_cli environment', text: wpaCli.env() },
    { where: 'connector log', text: logText() },
    { where: 'wpa_supplicant -dd', text: out },
    { where: 'wpa_supplicant /proc/PID/cmdline', text: proc('cmdline') },
    { where: 'wpa_supplicant /proc/PID/environ', text: proc('environ') },
  ], bytes: [] }), []);
});

import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { macsecStaticFactory, STATIC_STATE_FILE } from '../../../src/consumers/macsec/static-connector.js';
import { runCommand } from '../../../src/consumers/macsec/run-command.js';
import { findLeaks } from '../../helpers/leak-scan.js';
import type { ConsumerKey } from '../../../src/consumers/connector.js';
import { KEY32, KEY32_B, netnsSkipReason, netnsWithVeth, recordingCommand, testContext, which } from './fixtures.js';

// Issue 14 item 4, static-SAK MACsec through iproute2 (src/consumers/macsec/static-connector.ts). No MACsec in this
// kernel: the command sequence is checked as exact text against a recording stand-in for `ip` (a mock, because
// the real `ip macsec` cannot succeed here), and the same batches go through the real `ip -n NS -batch -` in a
// network namespace, where they must fail for that reason only.

const DEV = 'macsec0';
const SCI = 'port 1 address 52:54:00:00:00:02';
const settings = (ip: string, extra: Record<string, unknown> = {}) => ({ device: DEV, peer_address: '52:54:00:00:00:02', key_bytes: 32, ip, ...extra });
const kid = (k: ConsumerKey) => k.keyId.replace(/-/g, '');
const hex = (k: ConsumerKey) => k.key.toString('hex');
const key = (n: number): ConsumerKey => ({ keyId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, key: Buffer.alloc(32, n) });

t.test('settings are checked and refused naming the field', async (t) => {
  const { ctx, cleanup } = testContext();
  t.teardown(cleanup);
  t.throws(() => macsecStaticFactory.create({ ...settings('ip'), device: undefined }, ctx), { name: 'ConnectorConfigError', field: 'connector.device' });
  t.throws(() => macsecStaticFactory.create({ ...settings('ip'), peer_address: '52:54:00:00:02' }, ctx), { name: 'ConnectorConfigError', field: 'connector.peer_address' });
  t.throws(() => macsecStaticFactory.create({ ...settings('ip'), key_bytes: 20 }, ctx), { name: 'ConnectorConfigError', field: 'connector.key_bytes' });
  t.throws(() => macsecStaticFactory.create({ ...settings('ip'), peer_port: 0 }, ctx), { name: 'ConnectorConfigError', field: 'connector.peer_port' });
  t.throws(() => macsecStaticFactory.create({ ...settings('ip'), sak: 'x' }, ctx), { name: 'ConnectorConfigError', field: 'connector.sak' });
});

t.test('the exact batches of a rotation, AN 0..3 and round again; stdin only', async (t) => {
  const { ctx, dir, cleanup, logText } = testContext();
  t.teardown(cleanup);
  const ip = recordingCommand(dir, 'ip', null); // mock: records the batch, as if the kernel had MACsec
  const c = macsecStaticFactory.create(settings(ip.path), ctx);
  const batches: string[] = [];
  const next = () => {
    const all = ip.stdin();
    const fresh = all.slice(batches.join('').length);
    batches.push(fresh);
    return fresh;
  };

  await c.stage(KEY32);
  t.equal(next(), `macsec add ${DEV} rx ${SCI} sa 0 pn 1 on key ${kid(KEY32)} ${hex(KEY32)}\n`, 'stage: rx SA on AN 0 (the peer may switch first)');
  await c.stage(KEY32); // idempotent: no batch
  await c.activate(KEY32);
  t.equal(next(), `macsec add ${DEV} tx sa 0 pn 1 on key ${kid(KEY32)} ${hex(KEY32)}\nlink set ${DEV} type macsec encodingsa 0\n`, 'activate: tx SA, then encodingsa');
  await c.activate(KEY32);
  t.equal(next(), '', 'activate again: nothing');

  await c.stage(KEY32_B);
  t.equal(next(), `macsec add ${DEV} rx ${SCI} sa 1 pn 1 on key ${kid(KEY32_B)} ${hex(KEY32_B)}\n`, 'the next key stages on AN 1');
  await c.activate(KEY32_B);
  t.equal(next(), `macsec add ${DEV} tx sa 1 pn 1 on key ${kid(KEY32_B)} ${hex(KEY32_B)}\nlink set ${DEV} type macsec encodingsa 1\n`);
  await t.rejects(c.retire(KEY32_B.keyId), /is in service on AN 1/, 'the key in service cannot be retired');
  await c.retire(KEY32.keyId);
  t.equal(next(), `macsec del ${DEV} tx sa 0\nmacsec del ${DEV} rx ${SCI} sa 0\n`, 'retire: both SAs of the old key');
  await c.retire(KEY32.keyId);
  t.equal(next(), '', 'retire again: nothing');

  // A key staged and then abandoned by the agents (the slave could not fetch it) gives its AN to the next key.
  await c.stage(key(3));
  t.equal(next(), `macsec add ${DEV} rx ${SCI} sa 2 pn 1 on key ${kid(key(3))} ${hex(key(3))}\n`);
  await c.stage(key(4));
  t.equal(next(), `macsec del ${DEV} rx ${SCI} sa 2\nmacsec add ${DEV} rx ${SCI} sa 2 pn 1 on key ${kid(key(4))} ${hex(key(4))}\n`, 'the abandoned key\'s SA is replaced');

  // A restarted agent (a new connector on the same work dir) carries on: AN 2, 3, then 0 again.
  const again = macsecStaticFactory.create(settings(ip.path), ctx);
  await again.activate(key(4));
  t.equal(next(), `macsec add ${DEV} tx sa 2 pn 1 on key ${kid(key(4))} ${hex(key(4))}\nlink set ${DEV} type macsec encodingsa 2\n`);
  await again.retire(KEY32_B.keyId);
  t.equal(next(), `macsec del ${DEV} tx sa 1\nmacsec del ${DEV} rx ${SCI} sa 1\n`);
  for (const [n, an] of [[5, 3], [6, 0]] as const) {
    await again.activate(key(n)); // not staged first: activate stages too
    t.equal(next(), `macsec add ${DEV} rx ${SCI} sa ${an} pn 1 on key ${kid(key(n))} ${hex(key(n))}\nmacsec add ${DEV} tx sa ${an} pn 1 on key ${kid(key(n))} ${hex(key(n))}\nlink set ${DEV} type macsec encodingsa ${an}\n`, `key ${n} on AN ${an}`);
  }

  await again.shutDown('test: fail closed');
  t.equal(next(), `link set ${DEV} down\n`);
  await again.activate(key(6));
  t.equal(next(), `link set ${DEV} up\n`, 'activating the key in service after a shut-down brings the port up');

  await t.rejects(again.stage({ keyId: key(7).keyId, key: Buffer.alloc(16, 7) }), /has 16 bytes but connector\.key_bytes says 32/);

  const state = readFileSync(join(dir, STATIC_STATE_FILE), 'utf8');
  t.equal(statSync(join(dir, STATIC_STATE_FILE)).mode & 0o777, 0o600);
  t.same(JSON.parse(state).activeAn, 0);
  t.ok(ip.argv().every((a) => a.join(' ') === '-batch -'), 'argv is always `-batch -`');
  const keys = [KEY32.key, KEY32_B.key, ...[3, 4, 5, 6].map((n) => key(n).key)];
  t.same(findLeaks(keys, { texts: [
    { where: 'ip argv', text: ip.argv().flat().join(' ') },
    { where: 'ip environment', text: ip.env() },
    { where: 'state file', text: state },
    { where: 'connector log', text: logText() },
  ], bytes: [] }), []);
});

const REAL_IP = which('ip');
const skipReal = !REAL_IP ? 'iproute2 is not installed' : netnsSkipReason();

t.test('the real ip -batch in a network namespace: parsed, and refused only for want of MACsec in the kernel', { skip: skipReal }, async (t) => {
  const realIp = REAL_IP!;
  // The veth is named like the MACsec device, so every name resolves and only the MACsec part is missing.
  const ns = netnsWithVeth('kmsmacsec', [DEV, 'peer0']);
  if (!ns.ok) throw new Error(ns.why);
  t.teardown(ns.remove);
  const { ctx, dir, cleanup, logText } = testContext();
  t.teardown(cleanup);
  const ip = recordingCommand(dir, 'ip', realIp);
  const c = macsecStaticFactory.create(settings(ip.path, { netns: 'kmsmacsec' }), ctx);

  // The `ip macsec` lines: iproute2 resolves the kernel's macsec generic-netlink family before it parses a line.
  const err = await c.stage(KEY32).catch((e: Error) => e);
  t.match(String(err), /macsec-static stage on macsec0 failed: .* -n kmsmacsec -batch - exited with 1: RTNETLINK answers: No such file or directory\s+Error talking to the kernel/);
  t.notMatch(String(err), /Command failed|Usage|wrong|Invalid/, 'no parse error');
  t.same(JSON.parse(readFileSync(join(dir, STATIC_STATE_FILE), 'utf8')).sas, {}, 'a failed stage records no SA');

  // The `link` line of an activation is parsed by iproute2 itself, then refused by the kernel (no macsec link type).
  const encodingsa = (an: number) => runCommand(realIp, ['-n', 'kmsmacsec', '-batch', '-'], `link set ${DEV} type macsec encodingsa ${an}\n`).catch((e: Error) => e.message);
  t.match(await encodingsa(3), /RTNETLINK answers: Operation not supported\s+Command failed -:1/);
  t.match(await encodingsa(9), /argument "9" is wrong/, 'the control: a line iproute2 cannot parse fails differently');

  t.same(ip.argv(), [['-n', 'kmsmacsec', '-batch', '-']], 'the real ip ran with no key in its argv (= its /proc/PID/cmdline)');
  t.same(findLeaks([KEY32.key], { texts: [{ where: 'error', text: String(err) }, { where: 'ip environment', text: ip.env() }, { where: 'log', text: logText() }], bytes: [] }), []);
});

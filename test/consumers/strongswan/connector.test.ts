import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { AgentRole, ConsumerKey } from '../../../src/consumers/connector.js';
import { connectorFactory } from '../../../src/consumers/registry.js';
import { ppkIdOf, type StrongswanConnector } from '../../../src/consumers/strongswan/connector.js';
import { ViciClient } from '../../../src/consumers/strongswan/vici.js';
import { sleep } from '../../helpers/etsi.js';
import { findLeaks } from '../../helpers/leak-scan.js';
import { capturingLogger } from '../../helpers/logs.js';
import {
  loadIkePsk,
  startCharonPair,
  strongswanSkipReason,
  tunnelDefinition,
  type Charon,
} from '../../helpers/strongswan.js';

// Two real charons in two network namespaces, userspace ESP, IKE authenticated with a PSK plus an RFC 8784 PPK
// that the connector puts in. The tunnel comes up, a ping runs through it the whole time, and the key is rotated
// three times in the agent's order; charon must say it used each new PPK, and the ping must barely notice.

const skip = strongswanSkipReason();
if (skip) t.comment(`skipped: ${skip}`);

const key = (): ConsumerKey => ({ keyId: randomUUID(), key: randomBytes(32) });

t.test('strongSwan connector: PPK bring-up and three rotations under traffic', { skip }, async (t) => {
  const pair = await startCharonPair();
  t.teardown(() => pair.close());
  const psk = randomBytes(32);
  await loadIkePsk(pair, psk);
  const logs = capturingLogger();
  const workDir = mkdtempSync(join(tmpdir(), 'kms-ss-work-'));
  t.teardown(() => rmSync(workDir, { recursive: true, force: true }));
  const factory = await connectorFactory('strongswan', 'bindings[0].connector.type');
  const connector = (role: AgentRole, from: Charon, to: Charon) =>
    factory.create(
      { type: 'strongswan', vici_socket: from.vici, connection: 'qkd', definition: tunnelDefinition(from, to), child: 'net' },
      { binding: `site-${from.name}`, role, workDir, log: logs.log },
    ) as StrongswanConnector;
  const master = connector('master', pair.a, pair.b);
  const slave = connector('slave', pair.b, pair.a);
  t.teardown(async () => {
    await master.close();
    await slave.close();
  });

  // The agent's order: slave stage, master stage, master activate, slave activate, then both retire the previous.
  const rotate = async (next: ConsumerKey, previous?: ConsumerKey) => {
    await slave.stage(next);
    await master.stage(next);
    await master.activate(next);
    await slave.activate(next);
    if (previous) {
      await master.retire(previous.keyId);
      await slave.retire(previous.keyId);
    }
  };

  const keys = [key()];
  await rotate(keys[0]!);
  const ping = pair.ping(50);
  await sleep(1000);
  for (let i = 1; i <= 3; i++) {
    keys.push(key());
    await rotate(keys[i]!, keys[i - 1]);
    await sleep(1000);
  }
  const counts = await ping.stop();
  t.comment(`ping through the tunnel during 3 rotations: ${counts.received}/${counts.sent}`);
  t.ok(counts.sent >= 60, 'the ping ran the whole time');
  t.ok(counts.sent - counts.received <= Math.max(2, counts.sent * 0.03), `at most 3 % of the pings lost (${counts.sent - counts.received} lost)`);

  for (const k of keys) {
    for (const charon of [pair.a, pair.b]) {
      t.match(charon.log(), `using PPK for PPK_ID '${ppkIdOf(k.keyId)}'`, `charon ${charon.name} used the PPK of ${k.keyId}`);
    }
  }

  const a = await pair.a.client();
  const b = await pair.b.client();
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const last = keys[3]!;
  const sasOf = async (c: ViciClient) =>
    (await c.stream('list-sas', { ike: 'qkd' }, 'list-sa')).events.map((e) => e.qkd as Record<string, string> & { 'child-sas'?: object });
  const sas = await sasOf(a);
  t.equal(sas.length, 1, 'one IKE SA left: each rotation closed the one before');
  t.equal(sas[0]?.ppk, 'yes', 'and it was authenticated with a PPK');
  t.same((await sasOf(b)).length, 1, 'the responder holds one IKE SA too');
  for (const c of [a, b]) {
    const held = (await c.call('get-shared')).keys as string[];
    t.same(held.filter((id) => id.startsWith('qkd-')), [ppkIdOf(last.keyId)], 'retired PPKs are unloaded, the current one stays');
  }

  t.test('activate again is a no-op, also from a restarted agent; stage again is harmless', async (t) => {
    await slave.stage(last);
    await master.stage(last);
    await master.activate(last);
    await slave.activate(last);
    const now = await sasOf(a);
    t.same(now.map((s) => s.uniqueid), sas.map((s) => s.uniqueid), 'the same IKE SA, no new IKE_AUTH');
    // An agent restarted after the switch repeats activate with a connector that remembers nothing: charon reuses
    // the IKE SA made with this definition (and this PPK) and refuses a duplicate CHILD_SA; that is success.
    const restarted = connector('master', pair.a, pair.b);
    t.teardown(() => restarted.close());
    await restarted.activate(last);
    const after = await sasOf(a);
    t.same(after.map((s) => s.uniqueid), sas.map((s) => s.uniqueid), 'after a restart too: the same IKE SA');
    t.same(Object.keys(after[0]?.['child-sas'] ?? {}).length, 1, 'and one CHILD_SA in it');
  });

  t.test('a key the responder does not hold: activate fails with charon\'s reason, the old tunnel keeps working', async (t) => {
    const stray = key();
    await master.stage(stray); // the slave never staged it
    await t.rejects(master.activate(stray), /refused initiate: .*AUTHENTICATION_FAILED/);
    const conns = (await a.stream('list-conns', { ike: 'qkd' }, 'list-conn')).events;
    t.equal((conns[0]?.qkd as Record<string, string>).ppk_id, ppkIdOf(last.keyId), 'the connection names the running key again');
    const p = pair.ping(50);
    await sleep(500);
    const c = await p.stop();
    t.ok(c.received > 0 && c.received >= c.sent - 1, `traffic still flows (${c.received}/${c.sent})`);
    await master.retire(stray.keyId);
  });

  t.test('the responder (ppk_id %any) still refuses an initiator that brings no PPK', async (t) => {
    // charon A's connection as it would be without the connector: same definition, no ppk_id
    await a.call('load-conn', { qkd: tunnelDefinition(pair.a, pair.b) as Record<string, string> });
    await t.rejects(a.call('initiate', { child: 'net', ike: 'qkd', timeout: 10_000 }, 15_000), /establishing CHILD_SA 'net' failed/);
    t.match(pair.b.log(), 'PPK required but peer does not support PPK', 'charon B says why');
    await a.call('load-conn', { qkd: { ...tunnelDefinition(pair.a, pair.b), ppk_id: ppkIdOf(last.keyId), ppk_required: 'yes' } as Record<string, string> });
  });

  t.test('shutDown takes the tunnel down; a new rotation brings it back', async (t) => {
    await master.shutDown('test: no key young enough');
    await slave.shutDown('test: no key young enough');
    t.same(await sasOf(a), [], 'no IKE SA at the initiator');
    t.same(((await a.call('get-shared')).keys as string[]).filter((id) => id.startsWith('qkd-')), [], 'no PPK left in charon');
    const down = pair.ping(50);
    await sleep(400);
    t.equal((await down.stop()).received, 0, 'nothing gets through');
    const fresh = key();
    keys.push(fresh);
    await rotate(fresh);
    const up = pair.ping(50);
    await sleep(400);
    const c = await up.stop();
    t.ok(c.received >= c.sent - 1, `traffic flows again (${c.received}/${c.sent})`);
  });

  t.test('no key bytes in charon\'s logs or the connector\'s', async (t) => {
    const leaks = findLeaks([...keys.map((k) => k.key), psk], {
      texts: [
        { where: 'charon A log', text: pair.a.log() },
        { where: 'charon B log', text: pair.b.log() },
        { where: 'connector log', text: logs.text() },
      ],
      bytes: [],
    });
    t.same(leaks, [], 'no leaks');
    t.match(logs.text(), 'strongSwan tunnel re-authenticated with the new PPK');
  });
});

t.test('a VICI socket that is not there: a clear error', async (t) => {
  const factory = await connectorFactory('strongswan', 'connector.type');
  const c = factory.create(
    { vici_socket: '/nonexistent/charon.vici', connection: 'x', definition: { children: { net: {} } } },
    { binding: 'b', role: 'master', workDir: tmpdir(), log: capturingLogger().log },
  );
  await t.rejects(c.stage(key()), /VICI socket \/nonexistent\/charon\.vici does not exist/);
  await c.close();
});

import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { ViciClient, ViciCommandError } from '../../../src/consumers/strongswan/vici.js';
import { startCharonPair, strongswanSkipReason } from '../../helpers/strongswan.js';
import { eventually } from '../../helpers/etsi.js';

// The VICI client against a real charon (strongSwan 5.9, in a network namespace of its own): answers, streamed
// events, strongSwan's refusals, requests in turn, and what an operator sees when charon hangs or dies.

const skip = strongswanSkipReason();
if (skip) t.comment(`skipped: ${skip}`);

t.test('VICI client against a real charon', { skip }, async (t) => {
  const pair = await startCharonPair();
  t.teardown(() => pair.close());
  const charon = pair.a;
  const vici = await charon.client();
  t.teardown(() => vici.close());

  t.test('version', async (t) => {
    const v = await vici.call('version');
    t.equal(v.daemon, 'charon');
    t.match(v.version, /^5\.\d+\.\d+/);
  });

  t.test('requests fired at once are answered in turn, each with its own answer', async (t) => {
    const ids = Array.from({ length: 12 }, (_, i) => `psk-${i}`);
    await Promise.all(ids.map((id) => vici.call('load-shared', { id, type: 'IKE', data: randomBytes(16), owners: [`peer-${id}`] })));
    const [shared, version, conns] = await Promise.all([vici.call('get-shared'), vici.call('version'), vici.stream('list-conns', {}, 'list-conn')]);
    t.same([...(shared.keys as string[])].sort(), [...ids].sort(), 'every secret loaded');
    t.equal(version.daemon, 'charon');
    t.same(conns.events, [], 'no connections yet');
    await Promise.all(ids.map((id) => vici.call('unload-shared', { id })));
    t.same((await vici.call('get-shared')).keys, []);
  });

  t.test('streamed events: list-conns after load-conn', async (t) => {
    await vici.call('load-conn', {
      demo: { version: 2, remote_addrs: ['10.231.0.2'], local: { auth: 'psk' }, remote: { auth: 'psk' }, children: { net: { remote_ts: ['10.232.2.1/32'] } } },
    });
    const { response, events } = await vici.stream('list-conns', { ike: 'demo' }, 'list-conn');
    t.same(response, {}, 'list-conns answers with an empty message after its events');
    t.equal(events.length, 1);
    const demo = events[0]!.demo as Record<string, unknown>;
    t.same(demo.remote_addrs, ['10.231.0.2']);
    t.same((demo.children as Record<string, Record<string, unknown>>).net!['remote-ts'], ['10.232.2.1/32']);
    await vici.call('unload-conn', { name: 'demo' });
  });

  t.test('strongSwan refuses: the error carries its errmsg', async (t) => {
    const err = await vici.call('load-conn', { bad: { version: 2, proposals: ['no-such-cipher'] } }).catch((e: unknown) => e);
    t.type(err, ViciCommandError);
    t.equal((err as ViciCommandError).command, 'load-conn');
    t.match((err as ViciCommandError).message, /^strongSwan refused load-conn: invalid value for: proposals, config discarded$/);
    await t.rejects(vici.call('unload-conn', { name: 'nope' }), /strongSwan refused unload-conn: unload: connection 'nope' not found/);
    await t.rejects(vici.call('no-such-command'), /charon does not know the VICI command "no-such-command"/);
    await t.rejects(vici.stream('list-sas', {}, 'no-such-event'), /charon does not know the VICI event "no-such-event"/);
    t.equal((await vici.call('version')).daemon, 'charon', 'the connection is still good after refusals');
  });

  t.test('a charon that stops answering: the request times out and the connection is closed', async (t) => {
    const slow = await charon.client();
    process.kill(charon.pid, 'SIGSTOP');
    try {
      // SIGSTOP takes effect a little after kill() returns; on a busy machine charon once answered in between.
      t.ok(await eventually(async () => allThreadsStopped(charon.pid), 2_000), 'every thread of charon is stopped');
      const started = Date.now();
      const client = await ViciClient.connect(charon.vici, { timeoutMs: 300 }); // the kernel accepts on a stopped listener
      await t.rejects(client.call('version'), /charon did not answer version within 300 ms/);
      t.ok(Date.now() - started < 2000, 'it did not wait for charon');
      t.ok(client.closed, 'the client gave up the connection (a late answer would belong to no one)');
      await t.rejects(client.call('version'), /did not answer version/, 'later calls fail the same way');
      await client.close();
    } finally {
      process.kill(charon.pid, 'SIGCONT');
    }
    t.equal((await slow.call('version')).daemon, 'charon', 'another connection carries on once charon runs again');
    await slow.close();
  });

  t.test('charon dies: calls say so; a stale socket says nobody listens', async (t) => {
    const pending = vici.stream('list-sas', {}, 'list-sa');
    process.kill(charon.pid, 'SIGKILL');
    await pending.catch(() => undefined); // may have been answered just before
    await t.rejects(vici.call('version'), /charon closed the VICI connection|VICI connection to .* failed/);
    await new Promise((r) => setTimeout(r, 200));
    await t.rejects(ViciClient.connect(charon.vici), /nothing listens on VICI socket .*charon is not running/);
  });
});

t.test('a socket that does not exist', async (t) => {
  await t.rejects(ViciClient.connect('/nonexistent/charon.vici'), /VICI socket \/nonexistent\/charon\.vici does not exist: is charon running/);
});

/** True when every thread of the process is in the stopped state ('T' in /proc/PID/task/TID/stat). */
function allThreadsStopped(pid: number): boolean {
  return readdirSync(`/proc/${pid}/task`).every((tid) => /\) T /.test(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
}

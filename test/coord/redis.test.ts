import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { CacheTopic } from '../../src/coord/coordinator.js';
import { RedisCoordinator } from '../../src/coord/redis.js';
import { coordinatorConformance } from '../conformance/coordinator.js';
import { eventually } from '../helpers/etsi.js';
import { capturingLogger } from '../helpers/logs.js';
import { REDIS_URL, redisSkipReason, serverPort, uniquePrefix } from '../helpers/redis.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

// The Redis coordinator against the machine's real Redis: the shared contract with two replicas (two coordinators of
// one KME), KMEs kept apart on one Redis, and what happens while Redis is away (through a TCP proxy that cuts it).
const skip = (await redisSkipReason()) ?? false;
if (skip) t.comment(`Redis coordinator tests skipped: ${skip}`);
const { log, text } = capturingLogger();

t.test('Redis coordinator: the Coordinator contract, two replicas', { skip }, (t) =>
  coordinatorConformance(t, async () => {
    const kme = uniquePrefix();
    const a = await RedisCoordinator.connect(REDIS_URL, kme, log);
    const b = await RedisCoordinator.connect(REDIS_URL, kme, log);
    return { a, b, close: async () => (await a.close(), await b.close()) };
  }),
);

t.test('two KMEs on one Redis hear and count only their own', { skip }, async (t) => {
  const a = await RedisCoordinator.connect(REDIS_URL, uniquePrefix(), log);
  const other = await RedisCoordinator.connect(REDIS_URL, uniquePrefix(), log);
  t.teardown(async () => (await a.close(), await other.close()));
  const heard: string[] = [];
  other.onChange((x) => heard.push(x));
  await a.publish('principals');
  t.match(await a.take('SAE_A/SAE_B', 5, 5, 60), { ok: true });
  await new Promise((r) => setTimeout(r, 100));
  t.same(heard, [], "another KME's replicas hear nothing");
  t.match(await other.take('SAE_A/SAE_B', 5, 5, 60), { ok: true }, 'and count from zero');
});

t.test('Redis away: counters refuse (the caller fails closed), check() says why; back: a reload of everything, counting again', { skip }, async (t) => {
  const { hostname, port } = new URL(REDIS_URL);
  const proxy = await TcpProxy.start({ host: hostname, port: Number(port || 6379) });
  t.teardown(() => proxy.close());
  const url = `redis://127.0.0.1:${proxy.port}`;
  const c = await RedisCoordinator.connect(url, uniquePrefix(), log);
  t.teardown(() => c.close());
  const heard: Array<CacheTopic | 'all'> = [];
  c.onChange((x) => heard.push(x));

  await proxy.refuse();
  await new Promise((r) => setTimeout(r, 100));
  await t.rejects(c.take('p', 1, 10, 60), 'a take while Redis is away rejects');
  await t.rejects(c.check(), /redis: /, 'check() rejects, naming Redis');
  await c.publish('policies'); // logged, not thrown: the database poll is the backstop
  t.match(text(), /could not tell the other replicas of a change/);

  await proxy.restore();
  const deadline = Date.now() + 8_000;
  while (!heard.includes('all') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(heard.includes('all'), "after reconnecting, handlers hear 'all' (messages may have been missed)");
  t.match(await c.take('p', 1, 10, 60), { ok: true }, 'counting again');
  await c.check();
});

t.test('an unreachable Redis at start: a clear error, the password not in it', async (t) => {
  const err = await RedisCoordinator.connect('redis://:s3cret@127.0.0.1:1', 'KME_X', log).then(() => undefined, (e: Error) => e);
  t.match(err?.message, /^cannot reach Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:1/);
  t.notMatch(err?.message, /s3cret/);
});

// Redis Sentinel (DESIGN §8): a master, a replica and one sentinel of this test's own (redis-server in sentinel
// mode). The coordinator finds the master through the sentinel and follows it when the master dies and the
// sentinel promotes the replica: handlers hear 'all' and counters count again on the new master.
const redisServer = spawnSync('redis-server', ['--version']).error ? undefined : 'redis-server';
t.test('through Redis Sentinel, across a failover', { skip: skip || (!redisServer && 'redis-server is not installed') }, async (t) => {
  const [masterPort, replicaPort, sentinelPort] = [await serverPort(), await serverPort(), await serverPort()];
  const dir = mkdtempSync(join(tmpdir(), 'kms-sentinel-'));
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const server = (args: string[]) => {
    const c = spawn('redis-server', args, { stdio: 'ignore' });
    children.push(c);
    return c;
  };
  const base = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]; // the replica writes what it syncs to its dir
  // No 5 s wait for more replicas before the first sync (Redis 7's default for diskless sync).
  const master = server(['--port', String(masterPort), ...base, '--repl-diskless-sync-delay', '0']);
  server(['--port', String(replicaPort), ...base, '--replicaof', '127.0.0.1', String(masterPort)]);
  t.ok(await eventually(async () => /master_link_status:up/.test(spawnSync('redis-cli', ['-p', String(replicaPort), 'info', 'replication']).stdout?.toString() ?? ''), 5_000), 'the replica follows the master');
  // The sentinel starts only now: it learns of replicas from the master's INFO, which it asks on connecting and then
  // every 10 s. Started earlier, it could still know no replica when the master dies, and abort the failover.
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, [`port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor qkms 127.0.0.1 ${masterPort} 1`, 'sentinel down-after-milliseconds qkms 1000', 'sentinel failover-timeout qkms 5000', ''].join('\n'));
  server([conf, '--sentinel']);
  const sentinel = (...args: string[]) => spawnSync('redis-cli', ['-p', String(sentinelPort), 'sentinel', ...args]).stdout?.toString() ?? '';
  t.ok(await eventually(async () => sentinel('get-master-addr-by-name', 'qkms').includes(String(masterPort)), 5_000), 'the sentinel names the master');
  t.ok(await eventually(async () => sentinel('replicas', 'qkms').includes(String(replicaPort)), 15_000), 'the sentinel knows the replica');

  const c = await RedisCoordinator.connect({ sentinels: [{ host: '127.0.0.1', port: sentinelPort }], name: 'qkms' }, uniquePrefix(), log);
  t.teardown(() => c.close());
  const heard: Array<CacheTopic | 'all'> = [];
  c.onChange((x) => heard.push(x));
  await c.publish('pools');
  t.ok(await eventually(async () => heard.includes('pools'), 2_000), "a change is heard through the sentinel's master");
  t.match(await c.take('p', 1, 10, 60), { ok: true }, 'counts on the master the sentinel named');

  master.kill('SIGKILL');
  const killed = Date.now();
  t.ok(await eventually(async () => heard.includes('all'), 20_000), "after the failover, handlers hear 'all'");
  t.comment(`the failover took ${Date.now() - killed} ms`);
  t.ok(await eventually(async () => (await c.take('q', 1, 10, 60).catch(() => ({ ok: false }))).ok, 5_000), 'and counters count on the promoted replica');
  await c.check();
});

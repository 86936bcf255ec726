import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { EtsiClient, answered } from '../helpers/client.js';
import { freshDatabase } from '../helpers/database.js';
import { eventually } from '../helpers/etsi.js';
import { testPki } from '../helpers/network.js';
import { poolViolations } from '../helpers/pool-state.js';
import { serverPort } from '../helpers/redis.js';
import { exportedSeriesNames, promqlMetricNames, scrape, valueOf } from '../helpers/metrics.js';
import { ROOT, runKms, waitFor, type KmsProcess } from '../helpers/process.js';

// Issue 15 item 5: three replicas of one KME — three `kms serve` processes (the compiled code) on one PostgreSQL
// database, one SoftHSM2 token and one Redis (a redis-server of this test's own, so that the test can stop and
// restart it without disturbing anything else on the machine) — under enc_keys/dec_keys load spread over all three.
// The test kills the replica that leads the link's ingest (SIGKILL), stops and restarts Redis, and revokes an SAE at
// one replica. Then: no key_ID answered twice, every answered key audited exactly once, the slave got the master's
// bytes, no material bound twice; another replica leads the ingest within 5 s; requests succeed again at the
// survivors within 5 s of each fault; readiness says Redis while it is away; the revoked SAE is refused at every
// replica within 1 s; every replica exposes the metrics the Grafana dashboard reads.

const redisBin = spawnSync('redis-server', ['--version']).error ? undefined : 'redis-server';
const dir = mkdtempSync(join(tmpdir(), 'kms-replicas-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const token = createSoftHsmToken(join(dir, 'hsm'), { label: 'kms-replicas' });
const skip = !redisBin ? 'redis-server is not installed (apt-get install redis-server)' : 'skip' in token ? token.skip : false;
if (skip) t.comment(`replica processes test skipped: ${skip}`);

interface Replica {
  name: string;
  proc: KmsProcess;
  url: string;
  opsUrl: string;
  alive: boolean;
}

t.test('three replicas survive the leader\'s death, a Redis restart and a revocation with nothing lost', { skip }, async (t) => {
  if ('skip' in token) throw new Error(token.skip);
  const { pki } = await testPki();
  const db = await freshDatabase();
  t.teardown(() => db.drop());

  const redisPort = await serverPort();
  let redis: ChildProcess | undefined;
  const startRedis = async () => {
    redis = spawn(redisBin!, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    t.ok(await eventually(async () => (spawnSync('redis-cli', ['-p', String(redisPort), 'ping']).stdout?.toString().trim() === 'PONG'), 5_000), 'redis up');
  };
  const stopRedis = async () => {
    const r = redis;
    redis = undefined;
    r?.kill('SIGTERM');
    if (r && r.exitCode === null) await new Promise((ok) => r.once('exit', ok));
  };
  await startRedis();
  t.teardown(stopRedis);

  const config = (name: string) => {
    const path = join(dir, `${name}.json`);
    writeFileSync(
      path,
      JSON.stringify({
        kme_id: 'KME_A',
        listen: { host: '127.0.0.1', port: 0 },
        ops: { listen: { host: '127.0.0.1', port: 0 } },
        tls: { cert: pki.kmes.KME_A!.cert, key: pki.kmes.KME_A!.key, ca: pki.ca },
        hsm: { type: 'pkcs11', module: token.module, token_label: token.tokenLabel, key_label: 'kek', create_key_if_missing: true },
        coordination: { redis: { url_env: 'KMS_REDIS_URL' } },
        saes: [{ id: 'SAE_A' }, { id: 'SAE_B' }],
        operators: [{ id: 'OPERATOR_1' }],
        keys: { max_key_count: 3_000 },
        links: [{ link_id: 'A-loop', source: { type: 'simulator', rate_bits_per_second: 20_000_000 } }],
      }),
    );
    return path;
  };
  const env = { KMS_DATABASE_URL: db.url, KMS_HSM_PIN: token.pin, SOFTHSM2_CONF: token.conf, KMS_REDIS_URL: `redis://127.0.0.1:${redisPort}` };
  const start = async (name: string): Promise<Replica> => {
    const proc = runKms(['serve', '--config', config(name)], env);
    t.teardown(() => proc.child.kill('SIGKILL'));
    await waitFor(proc, () => /"msg":"KME listening"/.test(proc.stdout), 60_000, `${name} listening`);
    const line = (msg: string) => JSON.parse(proc.stdout.split('\n').find((l) => l.includes(msg))!);
    return { name, proc, url: line('"KME listening"').url, opsUrl: line('ops listener').url, alive: true };
  };
  const replicas = [await start('r1')]; // the first creates the KEK on the token; then the others find it
  replicas.push(...(await Promise.all([start('r2'), start('r3')])));
  const clients = (sae: string) => replicas.map((r) => new EtsiClient(r.url, pki.ca, { cert: pki.saes[sae]!.cert, key: pki.saes[sae]!.key }));
  const [aAt, bAt] = [clients('SAE_A'), clients('SAE_B')];
  t.teardown(() => [...aAt, ...bAt].forEach((c) => c.close()));
  const live = () => replicas.map((r, i) => i).filter((i) => replicas[i]!.alive);

  // Load: each worker gets keys at one replica and fetches them as the slave at another, round robin over the live.
  const enc = new Map<string, string>(); // key_ID → key, as the master got it
  const dec = new Map<string, string>(); // key_ID → key, as the slave got it
  const encTwice: string[] = [];
  const decTwice: string[] = [];
  const failures: Array<{ at: number; what: string }> = [];
  let running = true;
  let turn = 0;
  const worker = async () => {
    while (running) {
      const ids = live();
      const i = ids[turn++ % ids.length]!;
      const j = ids[turn % ids.length]!;
      try {
        const r = await aAt[i]!.get('/api/v1/keys/SAE_B/enc_keys?number=2');
        if (r.status !== 200) {
          failures.push({ at: Date.now(), what: `enc ${r.status} ${r.text}` });
          await sleep(50);
          continue;
        }
        for (const k of r.body.keys) (enc.has(k.key_ID) ? encTwice : []).push(k.key_ID), enc.set(k.key_ID, k.key);
        const d = await bAt[j]!.post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: r.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
        if (d.status !== 200) failures.push({ at: Date.now(), what: `dec ${d.status} ${d.text}` });
        else for (const k of d.body.keys) (dec.has(k.key_ID) ? decTwice : []).push(k.key_ID), dec.set(k.key_ID, k.key);
      } catch (e) {
        failures.push({ at: Date.now(), what: `error ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
        await sleep(50);
      }
    }
  };
  t.ok(await eventually(async () => (await aAt[0]!.get('/api/v1/keys/SAE_B/status')).body?.stored_key_count > 500, 30_000), 'the pool filled');
  const workers = Array.from({ length: 6 }, worker);
  await sleep(2_000);
  t.ok(enc.size > 0, `${enc.size} keys delivered before the faults`);

  // 1. The ingest leader dies.
  const leader = replicas.find((r) => /"job":"ingest:A-loop"[^\n]*"msg":"leading this job"|"msg":"leading this job"[^\n]*"job":"ingest:A-loop"/.test(r.proc.stdout));
  t.ok(leader, 'one replica leads the ingest');
  leader!.alive = false;
  leader!.proc.child.kill('SIGKILL');
  const killedAt = Date.now();
  t.ok(await eventually(async () => replicas.some((r) => r.alive && /leading this job[^\n]*ingest:A-loop|ingest:A-loop[^\n]*leading this job/.test(r.proc.stdout)), 5_000), 'another replica leads the ingest within 5 s');
  t.comment(`another replica leads the ingest after ${Date.now() - killedAt} ms`);
  await sleep(5_000);
  const lateAfterKill = failures.filter((f) => f.at > killedAt + 5_000);
  t.same(lateAfterKill, [], 'from 5 s after the kill every request at the survivors succeeds');
  const sizeBeforeRedis = enc.size;

  // 2. Redis stops, and comes back.
  await stopRedis();
  const redisDownAt = Date.now();
  await sleep(1_500);
  const survivor = replicas.find((r) => r.alive)!;
  const notReady = await (await fetch(`${survivor.opsUrl}/readyz`)).json();
  t.match(notReady, { status: 'not ready', checks: { database: 'ok', hsm: 'ok', redis: /^redis: / } }, 'not ready while Redis is away, saying why');
  t.ok(enc.size > sizeBeforeRedis, `keys kept flowing while Redis was away (${enc.size - sizeBeforeRedis})`);
  await startRedis();
  const redisBackAt = Date.now();
  t.ok(await eventually(async () => (await fetch(`${survivor.opsUrl}/readyz`)).status === 200, 5_000), 'ready again within 5 s of Redis coming back');
  t.comment(`ready again ${Date.now() - redisBackAt} ms after Redis came back`);
  const lateAfterRedis = failures.filter((f) => f.at > redisDownAt && f.at > killedAt + 5_000);
  t.same(lateAfterRedis, [], 'no request failed because of the Redis restart');

  // 3. An operator revokes SAE_B at one replica; the others refuse it within 1 s.
  running = false;
  await Promise.all(workers);
  const operator = new EtsiClient(survivor.url, pki.ca, { cert: pki.operators.OPERATOR_1!.cert, key: pki.operators.OPERATOR_1!.key });
  t.teardown(() => operator.close());
  const revoked = await operator.post('/admin/v1/saes/SAE_B/revoke', { reason: 'replica test' });
  t.equal(revoked.status, 200, answered(revoked));
  const revokedAt = Date.now();
  await sleep(1_000);
  for (const i of live()) {
    const r = await bAt[i]!.get('/api/v1/keys/SAE_A/status');
    t.equal(r.status, 401, `replica ${replicas[i]!.name} refuses the revoked SAE ${Date.now() - revokedAt} ms after the revocation`);
  }

  // Nothing lost, nothing twice.
  t.comment(`keys answered to the master: ${enc.size}; to the slave: ${dec.size}; failed requests: ${failures.length} (${[...new Set(failures.map((f) => f.what.slice(0, 40)))].join('; ')})`);
  t.same(encTwice, [], 'no key_ID answered twice to the master');
  t.same(decTwice, [], 'no key_ID answered twice to the slave');
  t.ok([...dec].every(([id, key]) => enc.get(id) === key), 'the slave got exactly what the master got, for every key it got');
  const check = new pg.Client({ connectionString: db.url });
  await check.connect();
  t.teardown(() => check.end());
  const audited = async (operation: string, ids: string[]) =>
    (await check.query(`SELECT id::text, count(*)::int AS n FROM audit_event, unnest(key_ids) AS id WHERE operation = $1 AND id = ANY($2::uuid[]) GROUP BY id`, [operation, ids])).rows as Array<{ n: number }>;
  const master = await audited('deliver_master', [...enc.keys()]);
  t.ok(master.length === enc.size && master.every((r) => r.n === 1), 'every key answered to the master has exactly one deliver_master event');
  const slave = await audited('deliver_slave', [...dec.keys()]);
  t.ok(slave.length === dec.size && slave.every((r) => r.n === 1), 'every key answered to the slave has exactly one deliver_slave event');
  t.same(await poolViolations(check), { multiBound: 0, freeButBound: 0, wrongCount: 0, takenUnbound: 0 }, 'no material bound twice, none lost silently');

  // Every replica exposes the metrics the dashboard reads; together they counted the keys they delivered.
  const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/qkms-dashboard.json'), 'utf8')) as { panels: Array<{ targets?: Array<{ expr: string }>; panels?: Array<{ targets?: Array<{ expr: string }> }> }> };
  const wanted = new Set(dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).flatMap((p) => (p.targets ?? []).flatMap((q) => promqlMetricNames(q.expr))));
  let counted = 0;
  for (const r of replicas.filter((x) => x.alive)) {
    const s = await scrape(r.opsUrl);
    const exported = exportedSeriesNames(s);
    t.same([...wanted].filter((n) => !exported.has(n)), [], `${r.name} exports every metric the dashboard reads (${wanted.size})`);
    counted += valueOf(s, 'qkms_keys_delivered_total', { operation: 'enc_keys' }) ?? 0;
  }
  t.ok(counted > 0, `the survivors counted ${counted} keys delivered by enc_keys`);

  for (const r of replicas.filter((x) => x.alive)) r.proc.child.kill('SIGTERM');
  for (const r of replicas.filter((x) => x.alive)) t.equal(await r.proc.exited, 0, `${r.name} stops cleanly`);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

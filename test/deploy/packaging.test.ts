import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { EtsiClient } from '../helpers/client.js';
import { freshDatabase } from '../helpers/database.js';
import { ROOT, runKms, waitFor } from '../helpers/process.js';

// Issue 15 item 6: the packaging a production install uses (deploy/). The systemd unit is checked by systemd's own
// verifier, and the way it runs the KME is run for real: the compiled code, as an unprivileged user, from a folder
// that user cannot write, secrets only from files named by *_FILE, SIGTERM to stop. The container
// definition cannot be built here (no container daemon on these machines): its promises are checked as text.

const UNIT = join(ROOT, 'deploy/systemd/qkms.service');
const unit = readFileSync(UNIT, 'utf8');
const directive = (name: string) => [...unit.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]!);

const noAnalyzer = spawnSync('systemd-analyze', ['--version']).error;
const analyzerSkip = noAnalyzer ? `systemd-analyze is not installed (${noAnalyzer.message}): the unit is not verified here` : false;
if (analyzerSkip) t.comment(analyzerSkip);
t.test('systemd-analyze verify accepts the unit without a warning', { skip: analyzerSkip }, async (t) => {
  const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stderr.trim(), '', 'no warning either (an unknown directive only warns)');
});

t.test("the unit's secrets are files, never values", async (t) => {
  const env = directive('Environment');
  t.ok(env.includes('KMS_DATABASE_URL_FILE=%d/database-url') && env.includes('KMS_HSM_PIN_FILE=%d/hsm-pin'), env.join(' '));
  t.notOk(env.some((e) => /^KMS_(DATABASE_URL|HSM_PIN)=/.test(e)), 'no secret value in the unit');
  t.same(directive('LoadCredential').map((c) => c.split(':')[0]).sort(), ['database-url', 'hsm-pin']);
  t.same(directive('User'), ['qkms']);
  t.match(directive('ExecStart')[0], /bin\/kms\.js serve --config /, 'the compiled kms command');
});

const dir = mkdtempSync(join(tmpdir(), 'kms-unit-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const token = createSoftHsmToken(join(dir, 'hsm'), { label: 'kms-unit' });
const nobodyRunsNode = process.getuid?.() === 0 && spawnSync(process.execPath, ['--version'], { uid: 65534, gid: 65534 }).status === 0;
const runSkip =
  process.getuid?.() !== 0
    ? 'needs root, to start the KME as another user'
    : !nobodyRunsNode
      ? `an unprivileged user cannot run this Node (${process.execPath}: a folder on its path is closed to others)`
      : 'skip' in token
        ? token.skip
        : false;
if (runSkip) t.comment(`the run as the unit runs it is skipped: ${runSkip}`);
t.test('the KME runs as the unit runs it: unprivileged, secrets from files, stopped by SIGTERM', { skip: runSkip }, async (t) => {
  if ('skip' in token) throw new Error(token.skip); // not reached: runSkip said so
  const db = await freshDatabase();
  t.teardown(() => db.drop());
  const pki = join(dir, 'pki');
  for (const args of [['pki', 'init', '--out', pki], ['pki', 'issue-kme', '--ca-dir', pki, '--id', 'KME_U'], ['pki', 'issue-sae', '--ca-dir', pki, '--id', 'SAE_A'], ['pki', 'issue-sae', '--ca-dir', pki, '--id', 'SAE_B']]) {
    const p = runKms(args);
    t.equal(await p.exited, 0, p.stderr);
  }
  // As systemd's LoadCredential does: the secrets in files only the service's user can read.
  const credentials = join(dir, 'credentials');
  execFileSync('mkdir', ['-m', '0700', credentials]);
  writeFileSync(join(credentials, 'database-url'), db.url + '\n', { mode: 0o400 });
  writeFileSync(join(credentials, 'hsm-pin'), token.pin + '\n', { mode: 0o400 });
  writeFileSync(
    join(dir, 'kms.json'),
    JSON.stringify({
      kme_id: 'KME_U',
      listen: { host: '127.0.0.1', port: 0 },
      ops: { listen: { host: '127.0.0.1', port: 0 } },
      tls: { cert: 'pki/kme-KME_U.crt', key: 'pki/kme-KME_U.key', ca: 'pki/ca.crt' },
      hsm: { type: 'pkcs11', module: token.module, token_label: token.tokenLabel, create_key_if_missing: true },
      saes: [{ id: 'SAE_A' }, { id: 'SAE_B' }],
      keys: { max_key_count: 200 },
      links: [{ link_id: 'U-loop', source: { type: 'simulator', rate_bits_per_second: 10_000_000 } }],
    }),
  );
  const nobody = { uid: 65534, gid: 65534 };
  chownTree(dir, nobody);
  t.throws(() => execFileSync('test', ['-w', ROOT], nobody), 'the KME user cannot write the install folder');

  const serve = runKms(
    ['serve', '--config', join(dir, 'kms.json')],
    // No secret in the environment: only where its file is. HOME unset, as for a system user.
    { KMS_DATABASE_URL: undefined, KMS_HSM_PIN: undefined, HOME: undefined, SOFTHSM2_CONF: token.conf,
      KMS_DATABASE_URL_FILE: join(credentials, 'database-url'), KMS_HSM_PIN_FILE: join(credentials, 'hsm-pin') },
    nobody,
  );
  t.teardown(() => serve.child.kill('SIGKILL'));
  await waitFor(serve, () => /"msg":"KME listening"/.test(serve.stdout), 30_000, 'KME listening');
  const listening = JSON.parse(serve.stdout.split('\n').find((l) => l.includes('"KME listening"'))!);
  const ops = JSON.parse(serve.stdout.split('\n').find((l) => l.includes('ops listener'))!).url as string;
  t.equal((await fetch(`${ops}/readyz`)).status, 200, 'ready: database and HSM answer');

  const a = new EtsiClient(listening.url, join(pki, 'ca.crt'), { cert: join(pki, 'sae-SAE_A.crt'), key: join(pki, 'sae-SAE_A.key') });
  t.teardown(() => a.close());
  let enc;
  for (let i = 0; i < 100; i++) {
    enc = await a.get('/api/v1/keys/SAE_B/enc_keys');
    if (enc.status === 200) break;
    await new Promise((r) => setTimeout(r, 100)); // the pool is still filling
  }
  t.equal(enc!.status, 200, 'serves keys');
  t.notMatch(serve.stdout + serve.stderr, new RegExp(`${token.pin}|${db.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'secrets never logged');

  const stopped = Date.now();
  serve.child.kill('SIGTERM');
  t.equal(await serve.exited, 0, 'SIGTERM: a clean exit');
  t.ok(Date.now() - stopped < 30_000, "within the unit's TimeoutStopSec");
});

t.test("the container definition's promises", async (t) => {
  const file = readFileSync(join(ROOT, 'deploy/container/Containerfile'), 'utf8');
  const stages = file.split(/^FROM /m).slice(1);
  t.equal(stages.length, 2, 'a build stage and a run stage');
  const run = stages[1]!;
  t.match(run, /^node:24-/, 'Node 24 LTS');
  const users = [...run.matchAll(/^USER (\S+)/gm)].map((m) => m[1]!);
  t.match(users.at(-1), /^[1-9]\d*:[1-9]\d*$/, 'runs as a numeric non-root user');
  t.notMatch(run, /^COPY --from=build \/src\/(src|test|bench)\b/m, 'no sources in the run stage');
  t.match(run, /^COPY --from=build \/src\/dist /m, 'the compiled code');
  t.notMatch(run, /KMS_(DATABASE_URL|HSM_PIN)=/, 'no secret values in the environment');
  t.match(run, /KMS_HSM_PIN_FILE=\/run\/secrets\//, 'secrets from files');
  t.match(run, /^ENTRYPOINT \["node", "bin\/kms\.js"\]/m);
  const compose = readFileSync(join(ROOT, 'deploy/container/compose.yaml'), 'utf8');
  t.match(compose, /^\s+read_only: true$/m, 'read-only root file system');
  t.match(compose, /^\s+cap_drop: \[ALL\]$/m);
});

function chownTree(path: string, to: { uid: number; gid: number }): void {
  chownSync(path, to.uid, to.gid);
  if (statSync(path).isDirectory()) {
    chmodSync(path, 0o700);
    for (const name of readdirSync(path)) chownTree(join(path, name), to);
  }
}

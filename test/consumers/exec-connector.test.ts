import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import t from 'tap';
import { ConnectorConfigError } from '../../src/consumers/connector.js';
import { ExecConnector, parseExecSettings } from '../../src/consumers/exec/exec-connector.js';
import { capturingLogger } from '../helpers/logs.js';

// The exec connector runs real scripts (/bin/sh): what each step receives in argv, the environment, stdin and
// fd 3; how failures read; and that the key never shows in argv, the environment or an error.

const dir = mkdtempSync(join(tmpdir(), 'kms-exec-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// Writes its argv, its environment and whatever arrives on stdin and fd 3 to files of its own folder; fails with
// the code in $dir/exit when that file exists; echoes the key to stderr when $dir/echo exists.
const script = join(dir, 'encryptor.sh');
writeFileSync(
  script,
  `#!/bin/sh
out=${dir}/out
mkdir -p "$out"
printf '%s\\n' "$@" > "$out/argv"
env > "$out/env"
cat > "$out/stdin" 2>/dev/null
{ cat <&3; } > "$out/fd3" 2>/dev/null
if [ -e ${dir}/echo ]; then cat "$out/stdin" >&2; fi
if [ -e ${dir}/exit ]; then exit "$(cat ${dir}/exit)"; fi
if [ -e ${dir}/sleep ]; then sleep 5; fi
exit 0
`,
);
chmodSync(script, 0o755);
const out = (f: string) => readFileSync(join(dir, 'out', f));
const { log, text: logs } = capturingLogger();
const connector = (settings: Record<string, unknown> = {}) =>
  new ExecConnector(parseExecSettings({ type: 'exec', command: script, args: ['wan0'], ...settings }), { binding: 'b1', role: 'slave', workDir: dir, log });

t.test('stage hands the key on stdin (hex by default), the step and key_ID in argv and the environment', async (t) => {
  const key = { keyId: randomUUID(), key: randomBytes(32) };
  await connector().stage(key);
  t.equal(out('argv').toString(), `wan0\nstage\n${key.keyId}\n`);
  t.equal(out('stdin').toString(), key.key.toString('hex') + '\n');
  const env = out('env').toString();
  for (const line of ['KMS_BINDING=b1', 'KMS_ROLE=slave', 'KMS_STEP=stage', `KMS_KEY_ID=${key.keyId}`, `KMS_WORK_DIR=${dir}`]) t.ok(env.includes(line), line);
  for (const form of [key.key.toString('hex'), key.key.toString('base64')]) {
    t.notOk(out('argv').toString().includes(form) || env.includes(form), 'the key is not in argv or the environment');
  }
});

t.test('fd 3 and the other formats', async (t) => {
  const key = { keyId: randomUUID(), key: randomBytes(32) };
  await connector({ key_via: 'fd3', key_format: 'raw' }).activate(key);
  t.same(out('fd3'), key.key, 'raw bytes on fd 3');
  t.equal(out('stdin').length, 0, 'nothing on stdin');
  await connector({ key_format: 'base64' }).activate(key);
  t.equal(out('stdin').toString(), key.key.toString('base64') + '\n');
});

t.test('retire and shutdown carry no key', async (t) => {
  const id = randomUUID();
  await connector().retire(id);
  t.equal(out('argv').toString(), `wan0\nretire\n${id}\n`);
  t.equal(out('stdin').length, 0);
  await connector().shutDown('key too old');
  t.equal(out('argv').toString(), 'wan0\nshutdown\n');
  t.ok(out('env').toString().includes('KMS_REASON=key too old'));
});

t.test('a non-zero exit fails the step: the error names the script and the code, never the key', async (t) => {
  const key = { keyId: randomUUID(), key: randomBytes(32) };
  writeFileSync(join(dir, 'exit'), '3');
  writeFileSync(join(dir, 'echo'), '');
  try {
    await t.rejects(connector().stage(key), { message: `exec connector: ${script} stage ${key.keyId} exited with code 3` });
    t.notOk(logs().includes(key.key.toString('hex')), 'the script echoed the key to stderr: not in the log');
    t.match(logs(), /withheld: it contains the key/);
  } finally {
    rmSync(join(dir, 'exit'));
    rmSync(join(dir, 'echo'));
  }
  writeFileSync(join(dir, 'sleep'), '');
  try {
    await t.rejects(connector({ timeout_ms: 300 }).retire(key.keyId), { message: /retire .* was killed after 300 ms$/ });
  } finally {
    rmSync(join(dir, 'sleep'));
  }
  await t.rejects(
    new ExecConnector(parseExecSettings({ type: 'exec', command: join(dir, 'missing.sh') }), { binding: 'b', role: 'master', workDir: dir, log }).retire('x'),
    { message: /missing\.sh retire x: cannot run it: ENOENT/ },
  );
});

t.test('settings errors name the field', async (t) => {
  const bad = (s: Record<string, unknown>, field: string) => {
    try {
      parseExecSettings({ type: 'exec', command: script, ...s });
      t.fail(`accepted ${JSON.stringify(s)}`);
    } catch (err) {
      t.ok(err instanceof ConnectorConfigError && err.field === field, `${field}: ${(err as Error).message}`);
    }
  };
  bad({ command: 'rekey.sh' }, 'connector.command');
  bad({ args: 'wan0' }, 'connector.args');
  bad({ key_via: 'argv' }, 'connector.key_via');
  bad({ key_format: 'pem' }, 'connector.key_format');
  bad({ timeout_ms: 5 }, 'connector.timeout_ms');
  bad({ key: 'x' }, 'connector.key');
});

import t from 'tap';
import { saeCommand } from '../../src/admin/sae-cli.js';
import { runKms } from '../helpers/process.js';
import { adminCli } from '../helpers/admin-cli.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 item 2: `kms sae …` end to end against a running KME, over the admin API with the operator's certificate:
// every command, its table and --json, the exit status, and bad arguments named before the KME is asked.

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 } });
});
t.teardown(() => k?.close());

const sae = adminCli(() => k, saeCommand);

t.test('enroll, show, list, suspend, resume, revoke: tables, --json, and the reasons of refusals', async (t) => {
  const enroll = await sae('enroll', 'SAE_E', '--cn', 'encryptor-5.example', '--allowed-peer', 'SAE_A', '--allowed-peer', 'SAE_B', '--tag', 'site=geneva', '--tag', 'classification=secret');
  t.equal(enroll.code, 0, enroll.err);
  t.match(enroll.out, /^SAE\s+STATUS\s+CERTIFICATE CN\s+ALLOWED PEERS\s+TAGS\s+SOURCE\s+CHANGED$/m);
  t.match(enroll.out, /^SAE_E\s+active\s+encryptor-5\.example\s+SAE_A,SAE_B\s+site=geneva,classification=secret\s+admin\s+\d{4}-/m);

  const shown = await sae('show', 'SAE_E', '--json');
  t.equal(shown.code, 0);
  t.match(JSON.parse(shown.out), { sae_id: 'SAE_E', certificate_cn: 'encryptor-5.example', allowed_peers: ['SAE_A', 'SAE_B'], status: 'active' });

  for (const [change, status] of [['suspend', 'suspended'], ['resume', 'active'], ['revoke', 'revoked']] as const) {
    const r = await sae(change, 'SAE_E', '--reason', `${change} in a test`);
    t.equal(r.code, 0, `${change}: ${r.err}`);
    t.match(r.out, new RegExp(`^SAE_E\\s+${status}\\s`, 'm'), `${change}: now ${status}`);
  }
  const list = await sae('list', '--status', 'revoked', '--json');
  t.same((JSON.parse(list.out) as { saes: Array<{ sae_id: string }> }).saes.map((s) => s.sae_id), ['SAE_E']);
  const all = await sae('list');
  t.match(all.out, /^SAE_A\s+active\s+SAE_A\s+any\s+-\s+config/m);

  const refused = await sae('resume', 'SAE_E');
  t.equal(refused.code, 1, 'refused by the KME: exit 1');
  t.match(refused.err, /^kms sae resume: refused \(409\): SAE SAE_E is revoked: it cannot be resumed$/);
  const unknown = await sae('show', 'SAE_Q');
  t.equal(unknown.code, 1);
  t.match(unknown.err, /refused \(404\): no SAE SAE_Q is registered/);
});

t.test('bad usage names the argument and asks the KME nothing (exit 2)', async (t) => {
  for (const [args, why] of [
    [['enroll'], /give exactly one SAE_ID/],
    [['enroll', 'SAE 1'], /SAE_ID "SAE 1": use 1–64 letters/],
    [['enroll', 'SAE_F', '--tag', 'Site=x'], /--tag "Site=x": NAME=VALUE/],
    [['enroll', 'SAE_F', '--sha256', 'abc'], /--sha256: a SHA-256 fingerprint/],
    [['enroll', 'SAE_F', '--allowed-peer', 'a/b'], /--allowed-peer "a\/b": not an SAE ID/],
    [['list', '--status', 'gone'], /--status "gone": one of active, suspended, revoked/],
    [['list', '--bogus'], /Unknown option '--bogus'/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ] as const) {
    const r = await sae(...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, why);
  }
  t.equal((await k.kms.db.query(`SELECT 1 FROM principal WHERE id = 'SAE_F'`)).rowCount, 0, 'nothing was enrolled');
});

t.test('through the kms command, with the KME and certificate from the environment; missing ones are named', async (t) => {
  const op = k.pki.operators.OPERATOR_1!;
  const env = { KMS_ADDR: k.kms.url, KMS_CACERT: k.pki.ca, KMS_CLIENT_CERT: op.cert, KMS_CLIENT_KEY: op.key };
  const list = runKms(['sae', 'list'], env);
  t.equal(await list.exited, 0, list.stderr);
  t.match(list.stdout, /^SAE_B\s+active/m);
  const noKey = runKms(['sae', 'list'], { ...env, KMS_CLIENT_KEY: '' });
  t.equal(await noKey.exited, 2);
  t.match(noKey.stderr, /--key \(KMS_CLIENT_KEY\) is required with --url \(KMS_ADDR\)/);
  const asSae = runKms(['sae', 'list'], { ...env, KMS_CLIENT_CERT: k.pki.saes.SAE_A!.cert, KMS_CLIENT_KEY: k.pki.saes.SAE_A!.key });
  t.equal(await asSae.exited, 1, "an SAE's certificate is refused");
  t.match(asSae.stderr, /refused \(401\): client certificate \(CN=SAE_A\) is not an operator of this KME/);
  const help = runKms(['sae', 'help']);
  t.equal(await help.exited, 0);
  t.match(help.stdout, /usage: kms sae <command>/);
});

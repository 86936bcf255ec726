import t from 'tap';
import { keyCommand } from '../../src/admin/key-cli.js';
import { timeArg } from '../../src/admin/command.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 item 2: `kms key …` end to end against a running KME, over the admin API with the operator's certificate:
// every command, its table and --json, key_IDs piped in on standard input, and bad arguments named before the KME is
// asked (exit 2).

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 } });
});
t.teardown(() => k?.close());

/** Runs `kms key ARGS` in this process against the test KME, with `stdin` as standard input. */
async function key(args: string[], stdin = ''): Promise<{ code: number; out: string; err: string }> {
  const op = k.pki.operators.OPERATOR_1!;
  const out: string[] = [];
  const err: string[] = [];
  const target = ['--url', k.kms.url, '--ca', k.pki.ca, '--cert', op.cert, '--key', op.key];
  const code = await keyCommand([...args, ...target], (l) => out.push(l), (l) => err.push(l), async () => stdin);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function newKey(): Promise<string> {
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  return (res.body as { keys: Array<{ key_ID: string }> }).keys[0]!.key_ID;
}

t.test('show, suspend, resume, received --ids piped into revoke, holders, destroy', async (t) => {
  const a = await newKey();
  const b = await newKey();
  const shown = await key(['show', a]);
  t.equal(shown.code, 0, shown.err);
  t.match(shown.out, new RegExp(`^key_ID\\s+${a}$`, 'm'));
  t.match(shown.out, /^state\s+DELIVERED$/m);
  t.match(shown.out, /^received by\s+SAE_A \(master, \d{4}-/m);
  t.match(shown.out, /^EVENT\s+AT\s+OPERATION\s+OUTCOME\s+ACTOR$/m);
  t.match(shown.out, /deliver_master\s+ok\s+sae:SAE_A/);

  const held = await key(['suspend', a, '--reason', 'looking into it']);
  t.equal(held.code, 0, held.err);
  t.match(held.out, /^1 key\(s\) suspended$/m);
  t.match((await key(['show', a])).out, /^state\s+DELIVERED \(suspended\)$/m);
  const twice = await key(['suspend', a]);
  t.match(twice.out, new RegExp(`^${a}\\s+already suspended$`, 'm'), 'what was left unchanged, and why');
  t.equal((await key(['resume', a])).code, 0);

  const ids = await key(['received', '--sae', 'SAE_A', '--since', '10m', '--ids']);
  t.equal(ids.code, 0, ids.err);
  t.same(ids.out.split('\n'), [a, b], 'one key_ID per line, oldest first');
  const table = await key(['received', '--sae', 'SAE_A', '--since', '10m']);
  t.match(table.out, /^KEY\s+AS\s+LINK\s+AT\s+EVENT$/m);
  t.match(table.out, new RegExp(`^${a}\\s+master\\s+KME_T-loopback\\s+\\d{4}-`, 'm'));

  const revoked = await key(['revoke', '-', '--reason', 'SAE_A compromised'], ids.out + '\n');
  t.equal(revoked.code, 0, revoked.err);
  t.match(revoked.out, /^2 key\(s\) revoked as compromised, material of 2 erased here$/m);
  t.match(revoked.out, /^received from this KME by:$/m);
  t.match(revoked.out, new RegExp(`^${b}\\s+SAE_A\\s+master\\s+\\d{4}-`, 'm'));

  const holders = await key(['holders', '--link', 'KME_T-loopback', '--since', '1h', '--json']);
  t.equal(holders.code, 0, holders.err);
  t.match(JSON.parse(holders.out), { link_id: 'KME_T-loopback', holders: [{ sae_id: 'SAE_A', as: 'master', keys: 2 }] });

  const c = await newKey();
  const destroyed = await key(['destroy', c, '--json']);
  t.match(JSON.parse(destroyed.out), { operation: 'destroy', changed: [c], erased: [c], unchanged: [] });
  const gone = await key(['destroy', c]);
  t.match(gone.out, /already ended \(DESTROYED\)/);
  const unknown = await key(['show', '00000000-0000-4000-8000-000000000000']);
  t.equal(unknown.code, 1, 'refused by the KME: exit 1');
  t.match(unknown.err, /^kms key show: refused \(404\): key 00000000-0000-4000-8000-000000000000 is not known at this KME/);
});

t.test('bad usage names the argument and asks the KME nothing (exit 2)', async (t) => {
  for (const [args, why, stdin] of [
    [['show'], /give exactly one KEY_ID/],
    [['revoke', 'abc'], /KEY_ID "abc" is not a key_ID/],
    [['revoke'], /give one or more KEY_IDs, or -/],
    [['revoke', '-'], /standard input held no key_ID/, '\n'],
    [['revoke', '-'], /standard input line 2: "nope" is not a key_ID/, '00000000-0000-4000-8000-000000000000\nnope\n'],
    [['received', '--since', '1h'], /--sae is required/],
    [['received', '--sae', 'SAE_A'], /--since is required/],
    [['received', '--sae', 'SAE_A', '--since', 'last week'], /--since "last week": a time/],
    [['received', '--sae', 'SAE_A', '--since', '1h', '--limit', '0'], /--limit "0": a whole number/],
    [['holders', '--link', 'a/b', '--since', '1h'], /--link "a\/b": not a link ID/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ] as Array<[string[], RegExp, string?]>) {
    const r = await key(args, stdin);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, why, args.join(' '));
    t.match(r.err, /\(kms key help\)$/);
  }
  const help = await key(['help']);
  t.equal(help.code, 0);
  t.match(help.out, /kms key received --sae SAE_2 --since 24h --ids \| kms key revoke -/);
});

t.test('times: ISO 8601, or a duration back from now', async (t) => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  t.equal(timeArg('--since', '30m', now), '2026-11-30T11:30:00.000Z');
  t.equal(timeArg('--since', '7d', now), '2026-11-23T12:00:00.000Z');
  t.equal(timeArg('--since', '2026-11-01T00:00:00+01:00', now), '2026-10-31T23:00:00.000Z');
  t.throws(() => timeArg('--since', '12', now), /--since "12"/);
});

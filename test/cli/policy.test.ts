import t from 'tap';
import { policyCommand } from '../../src/admin/policy-cli.js';
import { adminCli } from '../helpers/admin-cli.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 items 2 and 3: `kms policy …` end to end against a running KME over the admin API: set, show, list,
// delete, the table and --json, refusals (exit 1) and bad arguments named before the KME is asked (exit 2).

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 }, policies: [{ saes: ['SAE_A', 'SAE_C'], max_keys_per_minute: 600, link_failure: 'pqc_fallback' }] });
});
t.teardown(() => k?.close());

const policy = adminCli(() => k, policyCommand);

t.test('set, show, list, delete', async (t) => {
  const set = await policy('set', 'SAE_B', 'SAE_A', '--ttl', '10m', '--min-pool', '100', '--max-per-minute', '1200', '--tag', 'tenant=bank', '--tag', 'geography=ch');
  t.equal(set.code, 0, set.err);
  t.match(set.out, /^PAIR\s+KEY TTL\s+MIN POOL\s+MAX PER MINUTE\s+LINK FAILURE\s+TAGS\s+SOURCE\s+CHANGED$/m);
  t.match(set.out, /^SAE_A - SAE_B\s+600 s\s+100\s+1200\s+fail_closed\s+tenant=bank,geography=ch\s+admin\s+\d{4}-/m, 'fails closed unless set');
  const shown = await policy('show', 'SAE_A', 'SAE_B', '--json');
  t.match(JSON.parse(shown.out), { saes: ['SAE_A', 'SAE_B'], key_ttl_seconds: 600, min_pool_keys: 100, max_keys_per_minute: 1200, link_failure: 'fail_closed', tags: { tenant: 'bank', geography: 'ch' } });
  const fallback = await policy('set', 'SAE_A', 'SAE_B', '--link-failure', 'pqc_fallback', '--json');
  t.equal(fallback.code, 0, fallback.err);
  t.match(JSON.parse(fallback.out), { saes: ['SAE_A', 'SAE_B'], link_failure: 'pqc_fallback' });
  t.match((await policy('show', 'SAE_B', 'SAE_A')).out, /^SAE_A - SAE_B\s+default\s+-\s+-\s+pqc_fallback\s+-\s+admin/m);
  const replaced = await policy('set', 'SAE_A', 'SAE_B', '--ttl', '30s', '--json');
  t.same(Object.keys(JSON.parse(replaced.out)).sort(), ['changed_at', 'key_ttl_seconds', 'link_failure', 'saes', 'source', 'tags'], 'the whole policy is replaced');
  t.equal(JSON.parse(replaced.out).link_failure, 'fail_closed', 'left out: back to failing closed');
  const list = await policy('list');
  t.match(list.out, /^SAE_A - SAE_B\s+30 s\s+-\s+-\s+fail_closed\s+-\s+admin/m);
  t.match(list.out, /^SAE_A - SAE_C\s+default\s+-\s+600\s+pqc_fallback\s+-\s+config/m);
  const listed = JSON.parse((await policy('list', '--json')).out);
  t.same(listed.policies.map((p: { saes: string[]; link_failure: string }) => [p.saes.join('/'), p.link_failure]), [['SAE_A/SAE_B', 'fail_closed'], ['SAE_A/SAE_C', 'pqc_fallback']]);
  const fromFile = await policy('delete', 'SAE_C', 'SAE_A');
  t.equal(fromFile.code, 1, 'the config file owns that one');
  t.match(fromFile.err, /refused \(409\): the policy of SAE_A and SAE_C comes from the config file/);
  const deleted = await policy('delete', 'SAE_B', 'SAE_A');
  t.equal(deleted.code, 0, deleted.err);
  t.match(deleted.out, /deleted/);
  const again = await policy('show', 'SAE_A', 'SAE_B');
  t.equal(again.code, 1);
  t.match(again.err, /refused \(404\): no policy for SAE_A and SAE_B/);
});

t.test('bad usage names the argument (exit 2)', async (t) => {
  for (const [args, why] of [
    [['set', 'SAE_A'], /give the pair: two SAE_IDs/],
    [['set', 'SAE_A', 'SAE_A'], /two different SAEs/],
    [['set', 'SAE_A', 'SAE_B', '--ttl', 'forever'], /--ttl "forever": a duration/],
    [['set', 'SAE_A', 'SAE_B', '--max-per-minute', '0'], /--max-per-minute "0": a whole number of at least 1/],
    [['set', 'SAE_A', 'SAE_B', '--min-pool', 'lots'], /--min-pool "lots": a whole number of at least 0/],
    [['set', 'SAE_A', 'SAE_B', '--min-pool', '-3'], /Option '--min-pool' argument is ambiguous/],
    [['set', 'SAE_A', 'SAE_B', '--tag', 'Tenant=x'], /--tag "Tenant=x"/],
    [['set', 'SAE_A', 'SAE_B', '--link-failure', 'pqc'], /--link-failure "pqc": fail_closed or pqc_fallback/],
    [['show', 'a/b', 'SAE_A'], /SAE_ID "a\/b"/],
  ] as Array<[string[], RegExp]>) {
    const r = await policy(...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, why, args.join(' '));
  }
});

t.test('help names every option of set, --link-failure and its two values included', async (t) => {
  const help = await policy('help');
  t.equal(help.code, 0);
  t.match(help.out, /set SAE_ID SAE_ID .*\[--link-failure MODE\]/);
  t.match(help.out, /--link-failure\s+when its QKD link cannot serve: fail_closed .* pqc_fallback/s);
});

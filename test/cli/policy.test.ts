import t from 'tap';
import { policyCommand } from '../../src/admin/policy-cli.js';
import { adminCli } from '../helpers/admin-cli.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 items 2 and 3: `kms policy …` end to end against a running KME over the admin API: set, show, list,
// delete, the table and --json, refusals (exit 1) and bad arguments named before the KME is asked (exit 2).

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 }, policies: [{ saes: ['SAE_A', 'SAE_C'], max_keys_per_minute: 600 }] });
});
t.teardown(() => k?.close());

const policy = adminCli(() => k, policyCommand);

t.test('set, show, list, delete', async (t) => {
  const set = await policy('set', 'SAE_B', 'SAE_A', '--ttl', '10m', '--min-pool', '100', '--max-per-minute', '1200', '--tag', 'tenant=bank', '--tag', 'geography=ch');
  t.equal(set.code, 0, set.err);
  t.match(set.out, /^PAIR\s+KEY TTL\s+MIN POOL\s+MAX PER MINUTE\s+TAGS\s+SOURCE\s+CHANGED$/m);
  t.match(set.out, /^SAE_A - SAE_B\s+600 s\s+100\s+1200\s+tenant=bank,geography=ch\s+admin\s+\d{4}-/m);
  const shown = await policy('show', 'SAE_A', 'SAE_B', '--json');
  t.match(JSON.parse(shown.out), { saes: ['SAE_A', 'SAE_B'], key_ttl_seconds: 600, min_pool_keys: 100, max_keys_per_minute: 1200, tags: { tenant: 'bank', geography: 'ch' } });
  const replaced = await policy('set', 'SAE_A', 'SAE_B', '--ttl', '30s', '--json');
  t.same(Object.keys(JSON.parse(replaced.out)).sort(), ['changed_at', 'key_ttl_seconds', 'saes', 'source', 'tags'], 'the whole policy is replaced');
  const list = await policy('list');
  t.match(list.out, /^SAE_A - SAE_B\s+30 s\s+-\s+-\s+-\s+admin/m);
  t.match(list.out, /^SAE_A - SAE_C\s+default\s+-\s+600\s+-\s+config/m);
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
    [['show', 'a/b', 'SAE_A'], /SAE_ID "a\/b"/],
  ] as Array<[string[], RegExp]>) {
    const r = await policy(...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, why, args.join(' '));
  }
});

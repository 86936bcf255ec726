import t from 'tap';
import { poolCommand } from '../../src/admin/pool-cli.js';
import { adminCli } from '../helpers/admin-cli.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 item 2: `kms pool …` end to end against a running KME over the admin API: every command, its table and
// --json, refusals (exit 1) and bad arguments named before the KME is asked (exit 2).

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 }, admin: { min_pool_deletion_wait_seconds: 60 } });
});
t.teardown(() => k?.close());

const pool = adminCli(() => k, poolCommand);

t.test('list, show, suspend, resume, drain, schedule-deletion, cancel-deletion', async (t) => {
  const list = await pool('list');
  t.equal(list.code, 0, list.err);
  t.match(list.out, /^LINK\s+STATE\s+PEER\s+ROLE\s+AVAILABLE\s+KEYS OUT\s+DEVICE READ\s+CHANGED$/m);
  t.match(list.out, /^KME_T-loopback\s+active\s+-\s+loopback\s+\d+ blocks of 256 bits\s+yes\s+yes\s+\d{4}-/m);
  for (const [cmd, row] of [
    ['suspend', /^KME_T-loopback\s+suspended\s.*\s+no\s+yes\s/m],
    ['drain', /^KME_T-loopback\s+draining\s.*\s+yes\s+no\s/m],
    ['resume', /^KME_T-loopback\s+active\s.*\s+yes\s+yes\s/m],
  ] as const) {
    const r = await pool(cmd, 'KME_T-loopback', '--reason', `${cmd} in a test`);
    t.equal(r.code, 0, `${cmd}: ${r.err}`);
    t.match(r.out, row, cmd);
  }
  const tooSoon = await pool('schedule-deletion', 'KME_T-loopback', '--in', '30s');
  t.equal(tooSoon.code, 1, 'refused by the KME: below its minimum waiting period');
  t.match(tooSoon.err, /^kms pool schedule-deletion: refused \(400\): wait_seconds must be at least 60/);
  const scheduled = await pool('schedule-deletion', 'KME_T-loopback', '--in', '7d', '--json');
  t.equal(scheduled.code, 0, scheduled.err);
  const body = JSON.parse(scheduled.out);
  t.equal(body.state, 'pending_deletion');
  t.ok(Math.abs(Date.parse(body.delete_at) - (Date.now() + 7 * 86_400_000)) < 60_000, 'delete_at in seven days');
  t.match((await pool('show', 'KME_T-loopback')).out, /pending deletion at \d{4}-/);
  const back = await pool('resume', 'KME_T-loopback');
  t.equal(back.code, 1, 'no way from pending deletion straight to active');
  t.match(back.err, /refused \(409\): the pool of link KME_T-loopback is pending deletion/);
  t.match((await pool('cancel-deletion', 'KME_T-loopback')).out, /^KME_T-loopback\s+suspended\s/m);
});

t.test('bad usage names the argument (exit 2)', async (t) => {
  for (const [args, why] of [
    [['show'], /give exactly one LINK_ID/],
    [['suspend', 'a/b'], /LINK_ID "a\/b": use 1–128 letters/],
    [['schedule-deletion', 'KME_T-loopback'], /--in is required: a duration/],
    [['schedule-deletion', 'KME_T-loopback', '--in', 'soon'], /--in "soon": a duration such as 90s/],
    [['list', 'extra'], /unexpected argument extra/],
  ] as Array<[string[], RegExp]>) {
    const r = await pool(...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, why, args.join(' '));
  }
  t.equal((await pool('show', 'NO-LINK')).code, 1, 'an unknown link: refused by the KME (404)');
});

t.test('outage: a drill on the simulated link, its line and --json; bad SECONDS named (exit 2)', async (t) => {
  const r = await pool('outage', 'KME_T-loopback', '2');
  t.equal(r.code, 0, r.err);
  t.match(r.out, /^link KME_T-loopback down for 2 s \(until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$/);
  t.equal(k.kms.sources.get('KME_T-loopback')!.figures().up, false, 'the simulated device is down');
  const json = JSON.parse((await pool('outage', 'KME_T-loopback', '1', '--json')).out);
  t.equal(json.link_id, 'KME_T-loopback');
  t.equal(json.seconds, 1);
  t.ok(Date.parse(json.down_until) > Date.now(), 'down_until ahead');
  const events = await k.kms.db.query(`SELECT actor, body::jsonb -> 'detail' AS d FROM audit_event WHERE operation = 'pool' AND body::jsonb -> 'detail' ->> 'change' = 'outage_drill' ORDER BY seq`);
  t.same(events.rows.map((e) => [e.actor, e.d.seconds]), [['operator:OPERATOR_1', 2], ['operator:OPERATOR_1', 1]], 'both drills audited');
  for (const [args, why] of [
    [['outage', 'KME_T-loopback'], /give LINK_ID and SECONDS \(got KME_T-loopback\)/],
    [['outage', 'KME_T-loopback', 'soon'], /SECONDS "soon": a whole number of seconds from 1 to 86400/],
    [['outage', 'KME_T-loopback', '0'], /SECONDS "0": a whole number/],
    [['outage', 'KME_T-loopback', '86401'], /SECONDS "86401": a whole number/],
    [['outage', 'KME_T-loopback', '1.5'], /SECONDS "1.5": a whole number/],
    [['outage', 'a/b', '60'], /LINK_ID "a\/b": use 1–128 letters/],
  ] as Array<[string[], RegExp]>) {
    const bad = await pool(...args);
    t.equal(bad.code, 2, args.join(' '));
    t.match(bad.err, why, args.join(' '));
  }
  const unknown = await pool('outage', 'NO-LINK', '60');
  t.equal(unknown.code, 1);
  t.match(unknown.err, /^kms pool outage: refused \(404\): link NO-LINK has no pool at this KME/);
  const help = await pool('outage', '--help');
  t.match(help.out, /outage LINK_ID SECONDS/);
  t.match(help.out, /cuts one end, and that is enough/);
});

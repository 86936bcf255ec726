import t from 'tap';
import type { Config } from '../../src/config/schema.js';
import { PolicyBook } from '../../src/policy/policy-book.js';
import type { Db } from '../../src/store/db.js';
import { policiesStamp, setPolicy } from '../../src/store/policies.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';
import { capturingLogger } from '../helpers/logs.js';

// The policy book (src/policy/policy-book.ts) on a real database: seeding from the config file, and what applies to a
// request. Here, mostly the pair's link_failure: a request may fall back to a PQC key only when every pair of it
// allows it ("an SAE pair whose policy forbids fallback never gets a fallback key"), and a config entry that leaves
// link_failure out is the same as one that says fail_closed (no update event at every start).

let m: MigratedDatabase;
let db: Db;
const { log } = capturingLogger();

t.before(async () => {
  m = await migratedDatabase({ poolSize: 4, log });
  db = m.db;
});
t.teardown(async () => {
  await m?.close();
});

const config = (policies: Config['policies']) => ({ kme_id: 'KME_T', policies });
const events = async () =>
  (await db.query<{ body: string }>(`SELECT body FROM audit_event WHERE operation = 'policy' ORDER BY seq`)).rows.map((r) => JSON.parse(r.body).detail);

t.test('seeding: link_failure from the config file, stored and audited; left out it is fail_closed', async (t) => {
  const book = await PolicyBook.open(
    db,
    config([
      { saes: ['SAE_B', 'SAE_A'], link_failure: 'pqc_fallback' },
      { saes: ['SAE_A', 'SAE_C'], key_ttl_seconds: 60 },
    ]),
  );
  t.equal(book.of('SAE_A', 'SAE_B')?.linkFailure, 'pqc_fallback');
  t.equal(book.of('SAE_C', 'SAE_A')?.linkFailure, 'fail_closed', 'the column default, read back');
  t.same(
    (await events()).map((e) => [e.change, e.saes.join('/'), e.link_failure]),
    [
      ['set', 'SAE_A/SAE_B', 'pqc_fallback'],
      ['set', 'SAE_A/SAE_C', 'fail_closed'],
    ],
  );
  const stamp = await policiesStamp(db);
  await PolicyBook.open(
    db,
    config([
      { saes: ['SAE_A', 'SAE_B'], link_failure: 'pqc_fallback' },
      { saes: ['SAE_A', 'SAE_C'], key_ttl_seconds: 60, link_failure: 'fail_closed' },
    ]),
  );
  t.equal(await policiesStamp(db), stamp, 'saying fail_closed is the same as leaving it out: nothing changes');
  t.equal((await events()).length, 2, 'and no event');
  const changed = await PolicyBook.open(db, config([{ saes: ['SAE_A', 'SAE_B'] }, { saes: ['SAE_A', 'SAE_C'], key_ttl_seconds: 60 }]));
  t.equal(changed.of('SAE_A', 'SAE_B')?.linkFailure, 'fail_closed', 'taken out of the file: back to failing closed');
  t.same((await events()).slice(2).map((e) => [e.change, e.saes.join('/'), e.link_failure]), [['update', 'SAE_A/SAE_B', 'fail_closed']]);
});

t.test('forRequest falls back only when every pair of the request allows it; allowsFallback, one pair', async (t) => {
  const book = await PolicyBook.open(
    db,
    config([
      { saes: ['SAE_A', 'SAE_B'], link_failure: 'pqc_fallback', tags: { tenant: 'bank' } },
      { saes: ['SAE_A', 'SAE_C'], link_failure: 'pqc_fallback', key_ttl_seconds: 60 },
      { saes: ['SAE_A', 'SAE_D'], link_failure: 'fail_closed' },
    ]),
  );
  t.ok(book.allowsFallback('SAE_A', 'SAE_B'));
  t.ok(book.allowsFallback('SAE_B', 'SAE_A'), 'either way round');
  t.notOk(book.allowsFallback('SAE_A', 'SAE_D'), 'fail_closed');
  t.notOk(book.allowsFallback('SAE_A', 'SAE_E'), 'no policy: fail closed');

  t.match(book.forRequest('SAE_A', ['SAE_B']), { fallback: true, tags: { tenant: 'bank' } });
  t.match(book.forRequest('SAE_C', ['SAE_A']), { fallback: true, keyTtlSeconds: 60 });
  t.match(book.forRequest('SAE_A', ['SAE_B', 'SAE_C']), { fallback: true, keyTtlSeconds: 60 }, 'every pair allows it');
  t.equal(book.forRequest('SAE_A', ['SAE_B', 'SAE_D']).fallback, false, "one slave's pair fails closed");
  t.equal(book.forRequest('SAE_A', ['SAE_B', 'SAE_E']).fallback, false, "one slave's pair has no policy");
  t.equal(book.forRequest('SAE_A', ['SAE_E']).fallback, false);
  t.equal(book.forRequest('SAE_A', []).fallback, false, 'no slave, no fallback');
});

t.test('an operator sets link_failure; the book reloads it', async (t) => {
  const book = await PolicyBook.open(db, config([]));
  t.notOk(book.allowsFallback('SAE_X', 'SAE_Y'));
  await setPolicy(db, { saes: ['SAE_X', 'SAE_Y'], linkFailure: 'pqc_fallback', tags: {}, source: 'admin' }, { actor: 'operator:alice' });
  await book.reload();
  t.ok(book.allowsFallback('SAE_Y', 'SAE_X'));
  t.equal(book.forRequest('SAE_X', ['SAE_Y']).fallback, true);
});

import t from 'tap';
import { randomUUID } from 'node:crypto';
import { auditBody, insertAuditSql } from '../../src/audit/event.js';
import { flushCustodyIndex } from '../../src/lifecycle/custody-index-flush.js';
import { withTransaction, type Db } from '../../src/store/db.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';

// The custody index flush on real PostgreSQL (migrations/0016_custody_index_flush.sql): custody events' key_IDs wait
// in the GIN index's pending list until something moves them into the index; the job does, and every key_ID is
// still found through the index afterwards.

let m: MigratedDatabase;
let db: Db;

t.before(async () => {
  m = await migratedDatabase({ poolSize: 2 });
  db = m.db;
  // Where autovacuum runs (the embedded server), its ANALYZE of the table would move the pending entries too, and
  // could do so between the inserts and the flush below.
  await db.query('ALTER TABLE audit_event SET (autovacuum_enabled = false)');
});
t.teardown(async () => {
  await m?.close();
});

/** Custody events of 128 key_IDs each, as 128-key deliveries write them; returns every key_ID. */
async function deliveries(events: number): Promise<string[]> {
  const keyIds = Array.from({ length: events * 128 }, () => randomUUID());
  const bodies = Array.from({ length: events }, (_, i) =>
    auditBody({ operation: 'deliver_master', outcome: 'ok', actor: 'sae:SAE_A', keyIds: keyIds.slice(i * 128, (i + 1) * 128) }),
  );
  await db.query(insertAuditSql(1), [bodies]);
  return keyIds;
}

/** Events found through the index alone (no sequential scan allowed) for these key_IDs. */
async function foundThroughIndex(keyIds: string[]): Promise<number> {
  return withTransaction(db, async (c) => {
    await c.query('SET LOCAL enable_seqscan = off');
    const { rows } = await c.query(`SELECT count(*)::int AS n FROM audit_event WHERE key_ids && $1::uuid[]`, [keyIds]);
    return (rows[0] as { n: number }).n;
  });
}

t.test('pending key_IDs are moved into the index, and found through it before and after', async (t) => {
  const keyIds = await deliveries(200);
  t.equal(await foundThroughIndex([keyIds[0]!, keyIds[keyIds.length - 1]!]), 2, 'found while pending');
  const moved = await flushCustodyIndex(db);
  t.ok(moved > 0, `the pending list held ${moved} page(s), now moved`);
  t.equal(await flushCustodyIndex(db), 0, 'nothing left to move');
  t.equal(await foundThroughIndex([keyIds[0]!, keyIds[12_345]!, keyIds[keyIds.length - 1]!]), 3, 'found in the index proper');
});

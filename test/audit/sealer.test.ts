import t, { type Test } from 'tap';
import pg from 'pg';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { createMockSigningKey } from '../../hsm-mock/mock-signing-key.js';
import { parseCheckpoint } from '../../src/audit/checkpoint.js';
import { auditBody, insertAuditSql } from '../../src/audit/event.js';
import { eventLeafHash, gapLeafHash } from '../../src/audit/leaves.js';
import { LogKeys, logVkeys } from '../../src/audit/log-keys.js';
import { rootOf } from '../../src/audit/merkle.js';
import { Sealer } from '../../src/audit/sealer.js';
import { openNote } from '../../src/audit/signed-note.js';
import { parseVkey } from '../../src/audit/vkeys.js';
import type { Db } from '../../src/store/db.js';
import { insertSeal, lastSeal, sealsAfter } from '../../src/store/seals.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';
import { sleep } from '../helpers/etsi.js';
import { capturingLogger } from '../helpers/logs.js';

// The custody log's sealer (src/audit/sealer.ts) on a real PostgreSQL database: the order its tree uses (sequence
// numbers, src/audit/settle.ts) holds under concurrent writers whose transactions commit out of order and roll back:
// no committed event is skipped (sealed as a gap) or sealed twice, and every checkpoint verifies and matches the
// events. The KME's own use of it (real deliveries, tamper tests) is in test/audit/custody.test.ts.

const { log } = capturingLogger();
let m: MigratedDatabase;
let db: Db;
const wrapper = createMockKeyWrapper();
const signingKey = createMockSigningKey();
const origin = 'qkms/KME_S/custody';

t.before(async () => {
  m = await migratedDatabase({ poolSize: 20, log });
  db = m.db;
});
t.teardown(async () => {
  await m?.close();
});

/** A sealer for one test; it gives up the leader lock when the test ends, for the next test's sealer. */
function sealer(t: Test): Sealer {
  const keys = new LogKeys({ db, wrapper, signingKey, name: origin, log });
  const s = new Sealer({ db, databaseUrl: m.url, keys, everyMs: 20, log });
  t.teardown(async () => (await s.close(), await keys.close()));
  return s;
}
// Not ASCII only: the sealer hashes the bodies as UTF-8 in SQL, checked here against eventLeafHash.
const event = (i: number) => auditBody({ operation: 'status', outcome: 'refused', actor: `sae:W${i}`, detail: { i, site: 'Zürich–Genève ✓' } });

/** Everything sealed so far agrees with the table: each leaf is its event, or a gap where no event is committed. */
async function checkSealed(t: Test): Promise<{ size: number; gaps: number; events: number }> {
  const seals = await sealsAfter(db, 0, 1_000_000);
  const vkeys = (await logVkeys(db)).map(parseVkey);
  const { rows } = await db.query<{ seq: string; body: string }>(`SELECT seq, body FROM audit_event ORDER BY seq`);
  const bySeq = new Map(rows.map((r) => [Number(r.seq), r.body]));
  const leaves: Buffer[] = [];
  let [gaps, wrong] = [0, [] as number[]];
  for (const s of seals) {
    t.equal(s.firstSeq, leaves.length + 1, `seal ${s.treeSize} continues the tree`);
    for (let seq = s.firstSeq; seq <= s.treeSize; seq++) {
      const body = bySeq.get(seq);
      const expected = body === undefined ? gapLeafHash(seq) : eventLeafHash(body);
      const sealed = s.leafHashes.subarray(32 * (seq - s.firstSeq), 32 * (seq - s.firstSeq + 1));
      if (!sealed.equals(expected)) wrong.push(seq);
      if (body === undefined) gaps++;
      leaves.push(expected);
    }
    const opened = openNote(s.checkpoint, vkeys);
    const cp = parseCheckpoint(opened.text);
    if (opened.verifiedBy.length !== 2 || cp.size !== s.treeSize || !cp.root.equals(rootOf(leaves))) wrong.push(-s.treeSize);
  }
  t.same(wrong, [], 'every sealed leaf is its committed event or a true gap, and every checkpoint verifies with both keys');
  return { size: leaves.length, gaps, events: leaves.length - gaps };
}

t.test('a quiet log: events sealed in order, a rolled-back number sealed as a gap, signed by both keys', async (t) => {
  const s = sealer(t);
  await db.query(insertAuditSql(1), [[event(1), event(2)]]);
  const c = await db.connect();
  await c.query('BEGIN');
  await c.query(insertAuditSql(1), [[event(3)]]);
  await c.query('ROLLBACK');
  c.release();
  await db.query(insertAuditSql(1), [[event(4)]]);
  t.equal(await s.sealOnce(), 4, 'four numbers sealed');
  t.equal(await s.sealOnce(), 0, 'nothing new: no new checkpoint');
  const seal = await lastSeal(db);
  t.same(seal?.gaps, [3], 'number 3 is a gap');
  t.match(seal?.checkpoint, /^qkms\/KME_S\/custody\n4\n\S+\n\n\u2014 qkms\/KME_S\/custody \S+\n\u2014 qkms\/KME_S\/custody \S+\n$/u);
  t.same((await logVkeys(db)).map((v) => parseVkey(v).algorithm).sort(), ['ecdsa-p256', 'ml-dsa-65']);
  await checkSealed(t);
});

t.test('a transaction holding a number is waited for: nothing above it is sealed until it ends', async (t) => {
  const s = sealer(t);
  const c = await db.connect();
  await c.query('BEGIN');
  await c.query(insertAuditSql(1), [[event(5)]]); // draws number 5 and holds it, uncommitted
  await db.query(insertAuditSql(1), [[event(6)]]); // number 6 commits first
  const sealing = s.sealOnce();
  await sleep(100);
  await c.query('COMMIT');
  c.release();
  const sealed = await sealing;
  const seal = await lastSeal(db);
  t.ok(sealed === 0 || seal?.treeSize === 6, `either nothing was sealed past 4 or 5 and 6 both were (sealed ${sealed})`);
  while ((await s.sealOnce()) > 0);
  t.same((await lastSeal(db))?.gaps ?? [], [], 'number 5 was not taken for a gap');
  await checkSealed(t);
});

t.test('concurrent writers that commit out of order and roll back: nothing skipped, nothing sealed twice', async (t) => {
  const s = sealer(t);
  let writing = true;
  const sealing = (async () => {
    while (writing) {
      await s.sealOnce();
      await sleep(5);
    }
  })();
  let [committed, rolledBack] = [0, 0];
  const writer = async (w: number) => {
    for (let i = 0; i < 40; i++) {
      const c = await db.connect();
      try {
        await c.query('BEGIN');
        // Some transactions write something else first (they have their ID before the event), some start with it.
        if (i % 3 === 0) await c.query(`SELECT pg_current_xact_id()`);
        const n = 1 + (i % 3);
        await c.query(insertAuditSql(1), [Array.from({ length: n }, (_, j) => event(w * 1000 + i * 10 + j))]);
        await sleep((w * 7 + i * 13) % 17); // hold the numbers a while, so that commits overtake each other
        if ((w + i) % 5 === 0) {
          await c.query('ROLLBACK');
          rolledBack += n;
        } else {
          await c.query('COMMIT');
          committed += n;
        }
      } finally {
        c.release();
      }
    }
  };
  await Promise.all(Array.from({ length: 12 }, (_, w) => writer(w)));
  writing = false;
  await sealing;
  while ((await s.sealOnce()) > 0);
  const r = await checkSealed(t);
  t.equal(r.events, committed + 5, `every committed event is sealed (${r.events})`);
  t.ok(r.gaps >= rolledBack, `the rolled-back numbers are gaps (${r.gaps} gaps, ${rolledBack} rolled back here)`);
});

t.test('one sealer at a time: a second replica seals only once the leader has gone', async (t) => {
  const [leader, standby] = [sealer(t), sealer(t)];
  await db.query(insertAuditSql(1), [[event(7)]]);
  t.ok((await leader.sealOnce()) > 0, 'the first to ask leads and seals');
  await db.query(insertAuditSql(1), [[event(8)]]);
  t.equal(await standby.sealOnce(), 0, 'the standby seals nothing while the leader holds the lock');
  await leader.close();
  t.ok((await standby.sealOnce()) > 0, 'the standby takes over');
  await checkSealed(t);
});

t.test('a seal made on an edge that moved meanwhile is refused: no hole in the tree', async (t) => {
  const last = (await lastSeal(db))!;
  const stale = { treeSize: last.treeSize + 5, firstSeq: last.treeSize + 2, leafHashes: Buffer.alloc(32 * 4), gaps: [], frontier: Buffer.alloc(0), checkpoint: 'x' };
  await t.rejects(insertSeal(db, stale), /no longer extends the tree/);
  t.equal((await lastSeal(db))!.treeSize, last.treeSize, 'nothing recorded');
});

import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { Barrier } from '../../src/barrier/barrier.js';
import { eraseQueued } from '../../src/lifecycle/eraser.js';
import { chunkPieces, sealPieces } from '../../src/pool/chunking.js';
import { claimOwned, cursorsAfter } from '../../src/store/chunks.js';
import { withTransaction, type Db } from '../../src/store/db.js';
import { bindKeys, type KeyRow } from '../../src/store/bind-keys.js';
import { auditBody } from '../../src/audit/event.js';
import { endKeys, MaterialGoneError } from '../../src/store/keys.js';
import { ensureLink, insertAnnounced, insertIngested } from '../../src/store/pool.js';
import { intervalsOf } from '../../src/store/positions.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';
import { availableOwned, poolViolations } from '../helpers/pool-state.js';

// The chunk store on real PostgreSQL (migrations/0003_chunks.sql, docs/storage.md): concurrent claims never share a
// position, the database refuses to bind a position twice, one-time pads that span two chunks, and the eraser.

const BLOCK = 32;
let m: MigratedDatabase;
let db: Db;
const barrier = new Barrier(createMockKeyWrapper());
const material = (blocks: number, fill: number) => Buffer.alloc(blocks * BLOCK, fill);

t.before(async () => {
  m = await migratedDatabase({ poolSize: 4 });
  db = m.db;
  // OWN: this KME's own loopback link; PEER: a link whose primary (the owner of the first 300 positions) is KME P.
  await ensureLink(db, { linkId: 'OWN', localKmeId: 'K', peerKmeId: 'K', primaryKmeId: 'K', blockBits: 256 });
  await ensureLink(db, { linkId: 'PEER', localKmeId: 'K', peerKmeId: 'P', primaryKmeId: 'P', blockBits: 256 });
  const own = await Promise.all(sealPieces(barrier, 'OWN', material(600, 7), BLOCK, chunkPieces('0', 600, 600), true));
  await insertIngested(db, 'OWN', 'AVAILABLE', [{ ref: '0', firstSeq: '0', blocks: 600, ownerSplit: 600 }], own, []);
  const peer = await Promise.all(sealPieces(barrier, 'PEER', material(400, 9), BLOCK, chunkPieces('0', 400, 300), false));
  await insertAnnounced(db, 'PEER', [{ ref: 'r0', firstSeq: '0', blocks: 400, ownerSplit: 300 }], peer, []);
});
t.teardown(async () => {
  await m?.close();
});

const key = (linkId: string, seqs: string[]): KeyRow => ({
  keyId: randomUUID(),
  linkId,
  masterSaeId: 'A',
  originKmeId: 'K',
  sizeBits: 256 * seqs.length,
  state: 'DELIVERED',
  localSlaves: ['B'],
  expiresAt: new Date(Date.now() + 60_000),
  blockSeqs: seqs,
});

t.test('the device key was cut into chunks of at most 256 blocks, each end owning its share', async (t) => {
  const { rows } = await db.query(`SELECT link_id, first_seq::int AS first, blocks, owned FROM key_chunk ORDER BY link_id, first_seq`);
  t.same(rows, [
    { link_id: 'OWN', first: 0, blocks: 256, owned: true },
    { link_id: 'OWN', first: 256, blocks: 256, owned: true },
    { link_id: 'OWN', first: 512, blocks: 88, owned: true },
    { link_id: 'PEER', first: 0, blocks: 256, owned: false },
    { link_id: 'PEER', first: 256, blocks: 44, owned: false },
    { link_id: 'PEER', first: 300, blocks: 100, owned: true },
  ]);
  t.equal(await availableOwned(db, 'OWN'), 600);
});

t.test('concurrent claims take different chunks, and a claim waits for a held chunk only when nothing else is free', async (t) => {
  const seen: string[][] = [];
  await Promise.all(
    [0, 1].map(() =>
      withTransaction(db, async (c) => {
        const claim = await claimOwned(c, 'OWN', 10);
        seen.push(claim.seqs);
        await new Promise((r) => setTimeout(r, 200)); // both hold their chunk at once
        await bindKeys(c, { keys: [key('OWN', claim.seqs)], from: 'owned', pads: [], cursors: cursorsAfter(claim, 10), auditBodies: [] });
      }),
    ),
  );
  t.equal(seen.length, 2);
  t.same(seen.flat().filter((s, i, all) => all.indexOf(s) !== i), [], 'no position claimed twice');
  t.not(seen[0]![0], seen[1]![0], 'two chunks, not one after the other');
  const big = await withTransaction(db, async (c) => {
    const claim = await claimOwned(c, 'OWN', 1000);
    return claim.seqs.length;
  });
  t.equal(big, 580, 'a claim takes every free position it finds, across chunks, and no more');
  t.equal(await availableOwned(db, 'OWN'), 580, 'a rolled-back or unused claim moves no cursor');
  t.same(await poolViolations(db), { multiBound: 0, freeButBound: 0, wrongCount: 0, takenUnbound: 0 });
});

t.test('at the owner, the database refuses positions its cursors did not pass over', async (t) => {
  const before = await availableOwned(db, 'OWN');
  const attempt = (keySeqs: (claimed: string[]) => string[], move: (claim: Awaited<ReturnType<typeof claimOwned>>) => ReturnType<typeof cursorsAfter>) =>
    withTransaction(db, async (c) => {
      const claim = await claimOwned(c, 'OWN', 2);
      await bindKeys(c, { keys: [key('OWN', keySeqs(claim.seqs))], from: 'owned', pads: [], cursors: move(claim), auditBodies: [] });
    });
  await t.rejects(attempt((s) => [String(BigInt(s[0]!) - 1n)], (c) => cursorsAfter(c, 1)), /cursors passed over/, 'a position behind the cursor (taken already)');
  await t.rejects(attempt((s) => s, (c) => cursorsAfter(c, 1)), /cursors passed over/, 'more positions than the cursor moved');
  await t.rejects(attempt((s) => [s[0]!], (c) => cursorsAfter(c, 2)), /cursors passed over/, 'a position passed over but bound to nothing (lost)');
  await t.rejects(
    attempt((s) => s, (c) => cursorsAfter(c, 2).map((m) => ({ ...m, from: m.from + 1 }))),
    MaterialGoneError,
    'a cursor that is not where the claim found it does not move',
  );
  t.equal(await availableOwned(db, 'OWN'), before, 'nothing was taken');
  await attempt((s) => s, (c) => cursorsAfter(c, 2));
  t.equal(await availableOwned(db, 'OWN'), before - 2, 'the exact binding goes through');
  t.same(await poolViolations(db), { multiBound: 0, freeButBound: 0, wrongCount: 0, takenUnbound: 0 });
});

t.test('the database refuses a position bound twice, at the peer too', async (t) => {
  // The peer's binding runs on its own (no transaction around it, as the relay node runs it): it locks and checks the
  // chunks itself, and a refusal leaves nothing behind.
  await bindKeys(db, { keys: [key('PEER', ['10', '11'])], from: 'peer', pads: [], cursors: [], auditBodies: [] });
  const refused = key('PEER', ['11']);
  await t.rejects(
    bindKeys(db, { keys: [refused], from: 'peer', pads: [], cursors: [], auditBodies: [auditBody({ operation: 'reserve', outcome: 'ok', actor: 'kme:P', keyIds: [refused.keyId] })] }),
    MaterialGoneError,
    'the chunk, not the application, says no (the binding statement checks what the chunk records as bound)',
  );
  const { rows: left } = await db.query(
    `SELECT (SELECT count(*) FROM qkd_key WHERE key_id = $1)::int AS keys, (SELECT count(*) FROM audit_event WHERE $1 = ANY(key_ids))::int AS events`,
    [refused.keyId],
  );
  t.same(left, [{ keys: 0, events: 0 }], 'the refused statement left neither its key row nor its audit event');
  await t.rejects(
    withTransaction(db, (c) =>
      bindKeys(c, { keys: [], from: 'peer', pads: [{ linkId: 'PEER', seq: '10', from: 'peer' }], cursors: [], auditBodies: [] }),
    ),
    MaterialGoneError,
    "a key's position cannot be spent as a one-time pad",
  );
  await t.rejects(
    withTransaction(db, (c) =>
      bindKeys(c, { keys: [key('PEER', ['20']), key('PEER', ['20'])], from: 'peer', pads: [], cursors: [], auditBodies: [] }),
    ),
    MaterialGoneError,
    'nor bound to two keys of one batch',
  );
  const { rows } = await db.query(`SELECT bound::text FROM key_chunk WHERE link_id = 'PEER' AND first_seq = 0`);
  t.same(rows, [{ bound: '{[10,12)}' }], 'the refused attempts recorded nothing');
  await t.rejects(
    bindKeys(db, { keys: [key('PEER', ['310'])], from: 'peer', pads: [], cursors: [], auditBodies: [] }),
    MaterialGoneError,
    "this end's own positions are not the peer's to reserve",
  );
  await t.rejects(
    bindKeys(db, { keys: [key('PEER', ['500'])], from: 'peer', pads: [], cursors: [], auditBodies: [] }),
    MaterialGoneError,
    'nor positions stored nowhere',
  );
});

t.test('a one-time pad spanning two chunks is spent in both, once', async (t) => {
  const pad = ['254', '255', '256', '257'];
  await bindKeys(db, { keys: [], from: 'peer', pads: pad.map((seq) => ({ linkId: 'PEER', seq, from: 'peer' as const })), cursors: [], auditBodies: [] });
  const { rows } = await db.query(`SELECT first_seq::int AS first, gone::text AS gone FROM key_chunk WHERE link_id = 'PEER' AND NOT owned ORDER BY 1`);
  t.same(rows, [
    { first: 0, gone: '{[254,256)}' },
    { first: 256, gone: '{[256,258)}' },
  ]);
  await t.rejects(
    bindKeys(db, { keys: [key('PEER', ['255'])], from: 'peer', pads: [], cursors: [], auditBodies: [] }),
    MaterialGoneError,
    'a spent pad cannot be reserved again',
  );
});

t.test('the eraser zeroes destroyed positions under a fresh data key, and deletes a chunk once all of it is gone', async (t) => {
  const { rows: keys } = await db.query(`SELECT key_id::text AS id FROM qkd_key WHERE link_id = 'PEER'`);
  await withTransaction(db, (c) => endKeys(c, keys.map((k) => k.id as string), 'DESTROYED', () => undefined));
  const before = (await db.query(`SELECT sealed FROM key_chunk WHERE link_id = 'PEER' AND first_seq = 0`)).rows[0]!.sealed as Buffer;
  const figures = await eraseQueued({ db, barrier });
  t.ok(figures.resealed >= 2, `${figures.resealed} chunks re-sealed`);
  const { rows } = await db.query(`SELECT first_seq::text AS first, blocks, sealed, gone::text AS gone FROM key_chunk WHERE link_id = 'PEER' AND first_seq = 0`);
  const chunk = rows[0]!;
  t.equal(chunk.gone, '{[10,12),[254,256)}', 'the key and the pad are gone');
  t.not((chunk.sealed as Buffer).subarray(5, 65).toString('hex'), before.subarray(5, 65).toString('hex'), 'under a new wrapped data key');
  const plain = await barrier.open(chunk.sealed as Buffer, { linkId: 'PEER', firstSeq: '0', blocks: 256 });
  for (const g of intervalsOf(chunk.gone as string)) {
    t.ok(plain.subarray(Number(g.lo) * BLOCK, Number(g.hi) * BLOCK).every((b) => b === 0), `positions ${g.lo}..${g.hi} read as zeros`);
  }
  t.ok(plain.subarray(20 * BLOCK, 21 * BLOCK).every((b) => b === 9), 'the rest is intact');
  // Spend the whole owned chunk at 512 (88 positions): bound to a key, then destroyed.
  const id = await withTransaction(db, async (c) => {
    const claim = await claimOwned(c, 'OWN', 580);
    const rest = key('OWN', claim.seqs.slice(0, -88));
    const last = key('OWN', claim.seqs.slice(-88));
    await bindKeys(c, { keys: [rest, last], from: 'owned', pads: [], cursors: cursorsAfter(claim, 580), auditBodies: [] });
    return last.keyId;
  });
  await withTransaction(db, (c) => endKeys(c, [id], 'DESTROYED', () => undefined));
  await eraseQueued({ db, barrier });
  const { rows: left } = await db.query(`SELECT count(*)::int AS n FROM key_chunk WHERE link_id = 'OWN' AND first_seq = 512`);
  t.equal(left[0]!.n, 0, 'a chunk with every position gone is deleted');
  const { rows: queue } = await db.query('SELECT count(*)::int AS n FROM erase_queue');
  t.equal(queue[0]!.n, 0, 'the queue is empty');
});

t.test("concurrent bindings of the peer's positions: each position bound once, across two chunks, without deadlock", async (t) => {
  // Eight bindings at once on a pool of four, pairs naming the same two positions, one in each of the peer's chunks
  // (0 and 256): one of each pair goes through, and the chunks are locked in the same order by all of them.
  const keys = Array.from({ length: 8 }, (_, j) => key('PEER', [String(240 + (j >> 1)), String(260 + (j >> 1))]));
  const results = await Promise.allSettled(keys.map((k) => bindKeys(db, { keys: [k], from: 'peer', pads: [], cursors: [], auditBodies: [] })));
  for (let pair = 0; pair < 4; pair++) {
    const [a, b] = [results[2 * pair]!, results[2 * pair + 1]!];
    t.equal([a, b].filter((r) => r.status === 'fulfilled').length, 1, `pair ${pair}: one binding went through`);
    const refusal = [a, b].find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    t.type(refusal?.reason, MaterialGoneError, `pair ${pair}: the other was refused as material gone (not a deadlock)`);
  }
  const { rows } = await db.query(`SELECT first_seq::int AS first, bound::text AS bound FROM key_chunk WHERE link_id = 'PEER' AND NOT owned ORDER BY 1`);
  t.same(rows, [
    { first: 0, bound: '{[10,12),[240,244)}' },
    { first: 256, bound: '{[260,264)}' },
  ]);
});

t.test('the eraser and a transaction holding chunks of two links never deadlock', async (t) => {
  // A relay node's binding holds the pads it claimed on its next link ('PEER' here, sorted later) and then locks
  // chunks of the link the keys came over ('OWN'). The eraser, with positions queued on both links, takes one
  // link's chunks per transaction, so it never holds one link's chunk while it waits for the other's.
  await db.query(`INSERT INTO erase_queue (link_id, seqs) VALUES ('OWN', '{[0,1)}'), ('PEER', '{[300,301)}')`);
  const relay = await db.connect();
  try {
    await relay.query('BEGIN');
    await relay.query(`SET LOCAL lock_timeout = '5s'`);
    await relay.query(`SELECT 1 FROM key_chunk WHERE link_id = 'PEER' AND first_seq = 300 FOR UPDATE`);
    const erasing = eraseQueued({ db, barrier });
    await new Promise((r) => setTimeout(r, 300)); // the eraser is at work on 'OWN', or waits for 'PEER' 300
    await relay.query(`SELECT 1 FROM key_chunk WHERE link_id = 'OWN' AND first_seq = 0 FOR UPDATE`);
    await relay.query('COMMIT');
    const figures = await erasing;
    t.equal(figures.queued, 2, 'both entries erased once the relay committed');
  } finally {
    relay.release();
  }
  const { rows } = await db.query(`SELECT link_id, gone::text AS gone FROM key_chunk WHERE (link_id, first_seq) IN (('OWN', 0), ('PEER', 300)) ORDER BY 1`);
  t.same(rows, [
    { link_id: 'OWN', gone: '{[0,1)}' },
    { link_id: 'PEER', gone: '{[300,301)}' },
  ]);
});

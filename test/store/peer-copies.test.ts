import t from 'tap';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { auditBody } from '../../src/audit/event.js';
import { Barrier } from '../../src/barrier/barrier.js';
import { chunkPieces, sealPieces } from '../../src/pool/chunking.js';
import { bindKeys } from '../../src/store/bind-keys.js';
import { withTransaction, type Db } from '../../src/store/db.js';
import { destroyPeerCopies } from '../../src/store/keys.js';
import { ensureLink, insertAnnounced } from '../../src/store/pool.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';

// The ownership watermark on real PostgreSQL (src/store/keys.ts `destroyPeerCopies`, src/peers/link-sync.ts): below
// the owner's watermark, this end destroys its unreserved copies of the owner's material, keeps what is bound to
// keys here, and locks only the chunks it changes — a chunk that is spent already (and may be the one a binding is
// using) is left alone.

let m: MigratedDatabase;
let db: Db;
const event = (n: number) => auditBody({ operation: 'void', outcome: 'ok', actor: 'kme:P', detail: { blocks: n } });

t.before(async () => {
  m = await migratedDatabase({ poolSize: 3 });
  db = m.db;
  const barrier = new Barrier(createMockKeyWrapper());
  await ensureLink(db, { linkId: 'PEER', localKmeId: 'K', peerKmeId: 'P', primaryKmeId: 'P', blockBits: 256 });
  // Two chunks of the peer's material, [0,256) and [256,512), stored and confirmed.
  const chunks = await Promise.all(sealPieces(barrier, 'PEER', Buffer.alloc(512 * 32, 3), 32, chunkPieces('0', 512, 512), false));
  await insertAnnounced(db, 'PEER', [{ ref: 'r0', firstSeq: '0', blocks: 512, ownerSplit: 512 }], chunks, []);
  await db.query(`UPDATE key_chunk SET confirmed = true WHERE link_id = 'PEER'`);
  // The first chunk all spent (one-time pads), four positions of the second reserved for a key here.
  const pads = Array.from({ length: 256 }, (_, i) => ({ linkId: 'PEER', seq: String(i), from: 'peer' as const }));
  await bindKeys(db, { keys: [], from: 'peer', pads, cursors: [], auditBodies: [] });
  await bindKeys(db, {
    keys: [
      {
        keyId: '00000000-0000-4000-8000-000000000001',
        linkId: 'PEER',
        masterSaeId: 'A',
        originKmeId: 'P',
        sizeBits: 1024,
        state: 'RESERVED',
        localSlaves: ['B'],
        expiresAt: new Date(Date.now() + 60_000),
        blockSeqs: ['256', '257', '258', '259'],
      },
    ],
    from: 'peer',
    pads: [],
    cursors: [],
    auditBodies: [],
  });
});
t.teardown(async () => {
  await m?.close();
});

t.test('below the watermark: unreserved copies destroyed, reserved ones kept, spent chunks not even locked', async (t) => {
  const spentChunkHeld = await db.connect();
  try {
    await spentChunkHeld.query('BEGIN');
    // As a binding or the eraser would: the spent chunk is locked by another transaction.
    await spentChunkHeld.query(`SELECT 1 FROM key_chunk WHERE link_id = 'PEER' AND first_seq = 0 FOR UPDATE`);
    const destroyed = await withTransaction(db, async (c) => {
      await c.query(`SET LOCAL lock_timeout = '2s'`);
      return destroyPeerCopies(c, 'PEER', { below: '300', storedBefore: new Date(Date.now() + 60_000) }, event);
    });
    t.equal(destroyed, 40, 'positions 260..299: the unreserved copies below the watermark');
  } finally {
    await spentChunkHeld.query('ROLLBACK');
    spentChunkHeld.release();
  }
  const { rows } = await db.query(`SELECT first_seq::int AS first, gone::text AS gone, bound::text AS bound FROM key_chunk WHERE link_id = 'PEER' ORDER BY 1`);
  t.same(rows, [
    { first: 0, gone: '{[0,256)}', bound: '{}' },
    { first: 256, gone: '{[260,300)}', bound: '{[256,260)}' },
  ]);
  const { rows: queued } = await db.query(`SELECT seqs::text AS seqs FROM erase_queue WHERE link_id = 'PEER' ORDER BY id DESC LIMIT 1`);
  t.same(queued, [{ seqs: '{[260,300)}' }], 'queued for erasure');
  const { rows: events } = await db.query(`SELECT count(*)::int AS n FROM audit_event WHERE operation = 'void'`);
  t.equal(events[0]!.n, 1, 'one custody event');
  t.equal(
    await withTransaction(db, (c) => destroyPeerCopies(c, 'PEER', { below: '300', storedBefore: new Date(Date.now() + 60_000) }, event)),
    0,
    'a second pass finds nothing more to destroy (and writes no event)',
  );
});

t.test('copies stored after `storedBefore` are left alone (an announcement may still be on its way)', async (t) => {
  const n = await withTransaction(db, (c) => destroyPeerCopies(c, 'PEER', { below: '400', storedBefore: new Date(Date.now() - 60_000) }, event));
  t.equal(n, 0);
});

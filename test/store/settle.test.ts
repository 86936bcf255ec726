import t from 'tap';
import { randomUUID } from 'node:crypto';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { auditBody } from '../../src/audit/event.js';
import { Barrier } from '../../src/barrier/barrier.js';
import { chunkPieces, sealPieces } from '../../src/pool/chunking.js';
import { bindKeys, type KeyRow } from '../../src/store/bind-keys.js';
import type { Db } from '../../src/store/db.js';
import { DeadlinePassedError } from '../../src/store/errors.js';
import { MaterialGoneError, settleForwarded } from '../../src/store/keys.js';
import { ensureLink, insertAnnounced } from '../../src/store/pool.js';
import { migratedDatabase, type MigratedDatabase } from '../helpers/database.js';

// Settling relayed keys (src/store/keys.ts `settleForwarded`) runs as one statement with no transaction around it:
// it must check itself, on real PostgreSQL. A refusal (a key no longer reserved, the caller's deadline passed)
// changes nothing: no state, no audit event.

let m: MigratedDatabase;
let db: Db;

t.before(async () => {
  m = await migratedDatabase({ poolSize: 2 });
  db = m.db;
  const barrier = new Barrier(createMockKeyWrapper());
  await ensureLink(db, { linkId: 'PEER', localKmeId: 'K', peerKmeId: 'P', primaryKmeId: 'P', blockBits: 256 });
  const chunks = await Promise.all(sealPieces(barrier, 'PEER', Buffer.alloc(64 * 32, 5), 32, chunkPieces('0', 64, 64), false));
  await insertAnnounced(db, 'PEER', [{ ref: 'r0', firstSeq: '0', blocks: 64, ownerSplit: 64 }], chunks, []);
});
t.teardown(async () => {
  await m?.close();
});

let next = 0;
async function reserved(): Promise<string> {
  const row: KeyRow = {
    keyId: randomUUID(),
    linkId: 'PEER',
    masterSaeId: 'A',
    originKmeId: 'P',
    sizeBits: 256,
    state: 'RESERVED',
    localSlaves: ['B'],
    expiresAt: new Date(Date.now() + 60_000),
    blockSeqs: [String(next++)],
  };
  await bindKeys(db, { keys: [row], from: 'peer', pads: [], cursors: [], auditBodies: [] });
  return row.keyId;
}

const settle = (keyIds: string[], withinMs?: number) =>
  settleForwarded(
    db,
    keyIds.map((keyId) => ({ keyId, relayedTo: ['Q'] })),
    false,
    [auditBody({ operation: 'relay', outcome: 'ok', actor: 'kme:P', keyIds })],
    withinMs,
  );

async function stateOf(keyId: string) {
  const { rows } = await db.query(
    `SELECT state, relayed_to AS relayed, (SELECT count(*) FROM audit_event WHERE operation = 'relay' AND $1 = ANY(key_ids))::int AS events
       FROM qkd_key WHERE key_id = $1`,
    [keyId],
  );
  return rows[0] as { state: string; relayed: string[] | null; events: number };
}

t.test('within its deadline the keys are settled and audited', async (t) => {
  const [a, b] = [await reserved(), await reserved()];
  await settle([a, b], 5_000);
  t.same(await stateOf(a), { state: 'RESERVED', relayed: ['Q'], events: 1 }, 'kept for its local slave, relay recorded');
  t.same((await stateOf(b)).events, 1);
});

t.test('past the deadline the statement refuses and changes nothing', async (t) => {
  const a = await reserved();
  await t.rejects(settle([a], 0), DeadlinePassedError);
  await t.rejects(settle([a], -50), DeadlinePassedError, 'a deadline already behind it');
  t.same(await stateOf(a), { state: 'RESERVED', relayed: [], events: 0 }, 'no relay recorded, no event');
  await settle([a]);
  t.same((await stateOf(a)).relayed, ['Q'], 'no deadline given: settled');
});

t.test('a key that is no longer reserved refuses the whole batch', async (t) => {
  const [a, b] = [await reserved(), await reserved()];
  await db.query(`UPDATE qkd_key SET state = 'DESTROYED', destroyed_at = now() WHERE key_id = $1`, [b]);
  await t.rejects(settle([a, b], 5_000), MaterialGoneError);
  t.same(await stateOf(a), { state: 'RESERVED', relayed: [], events: 0 }, 'the other key of the batch is untouched');
});

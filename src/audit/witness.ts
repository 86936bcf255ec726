import { badRequest } from '../errors.js';
import type { Logger } from '../log.js';
import type { CosignAnswer, CosignRequest } from '../schemas/peer.js';
import { withTransaction, type Db } from '../store/db.js';
import { auditBody, insertAuditSql } from './event.js';
import type { LogKeys } from './log-keys.js';
import { verifyConsistency } from './merkle.js';
import { NoteFormatError, parseNote, signNote } from './signed-note.js';
import { openSignedCheckpoint } from './verify.js';
import { parseVkey } from './vkeys.js';

/**
 * This KME as a witness of its peers' custody logs: it cosigns a peer's checkpoint only if it extends the last one
 * it cosigned for that peer (an RFC 9162 consistency proof), so a KME that showed two different histories to two
 * parties would be caught by its witness refusing the second. The peer's verifier keys are pinned on first contact;
 * later checkpoints must verify with them. Each cosigning is an event of this KME's own log (`witness`), in the same
 * transaction as the update of what it holds: the peer's history is anchored in this log too. The cosignature is a
 * signed-note signature by this KME's own log keys over the peer's checkpoint text.
 */
export class Witness {
  constructor(private readonly o: { db: Db; keys: LogKeys; kmeId: string; log: Logger }) {}

  async cosign(peer: string, req: CosignRequest): Promise<CosignAnswer> {
    type Decision = { kind: 'behind'; heldSize: number } | { kind: 'refused'; why: string } | { kind: 'cosign' };
    const decided = await withTransaction(this.o.db, async (c): Promise<Decision> => {
      const { rows } = await c.query<{ origin: string; vkeys: string[]; tree_size: string; root: Buffer }>(
        'SELECT origin, vkeys, tree_size, root FROM witnessed_log WHERE peer_kme_id = $1 FOR UPDATE',
        [peer],
      );
      const held = rows[0];
      const vkeys = held?.vkeys ?? req.vkeys;
      let keys;
      let cp;
      try {
        keys = vkeys.map(parseVkey);
        cp = openSignedCheckpoint(req.checkpoint, keys);
      } catch (e) {
        const why = e instanceof NoteFormatError ? e.message : String(e);
        throw badRequest(`the checkpoint of ${peer} does not verify with the keys this witness pinned for it (${why})`);
      }
      const heldSize = held ? Number(held.tree_size) : 0;
      if (held && cp.origin !== held.origin) throw badRequest(`${peer}'s log is ${held.origin} to this witness, not ${cp.origin}`);
      if (held && req.from_size !== heldSize) return { kind: 'behind', heldSize };
      const proof = req.proof.map((h) => Buffer.from(h, 'base64'));
      if (held && !verifyConsistency(heldSize, cp.size, held.root, cp.root, proof)) {
        const why = cp.size < heldSize ? `its size ${cp.size} is below the size ${heldSize} cosigned before` : `it does not extend the checkpoint of size ${heldSize} cosigned before`;
        this.o.log.error({ peer, origin: cp.origin, size: cp.size, heldSize }, `custody log of ${peer} forked? ${why}; not cosigned`);
        await c.query(insertAuditSql(1), [[auditBody({ operation: 'witness', outcome: 'refused', actor: `kme:${peer}`, detail: { origin: cp.origin, size: cp.size, held_size: heldSize, reason: why } })]]);
        return { kind: 'refused', why };
      }
      await c.query(
        `INSERT INTO witnessed_log (peer_kme_id, origin, vkeys, tree_size, root) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (peer_kme_id) DO UPDATE SET tree_size = EXCLUDED.tree_size, root = EXCLUDED.root, updated_at = now()`,
        [peer, cp.origin, vkeys, cp.size, cp.root],
      );
      const detail = { origin: cp.origin, size: cp.size, root: cp.root.toString('base64'), ...(held ? {} : { pinned_vkeys: vkeys }) };
      await c.query(insertAuditSql(1), [[auditBody({ operation: 'witness', outcome: 'ok', actor: `kme:${peer}`, detail })]]);
      return { kind: 'cosign' };
    });
    // The origin sent a proof from another size than the one held here (this witness's first answer, or a reset).
    if (decided.kind === 'behind') return { cosigned: false, witness: this.o.kmeId, held_size: decided.heldSize };
    if (decided.kind === 'refused') throw badRequest(`not cosigned: ${decided.why}`);
    const { text } = parseNote(req.checkpoint); // verified above
    const note = await signNote(text, await this.o.keys.signers());
    return { cosigned: true, witness: this.o.kmeId, signatures: note.slice(text.length + 1) };
  }
}

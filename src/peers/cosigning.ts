import { startBackgroundJob } from '../lifecycle/background-job.js';
import type { Logger } from '../log.js';
import type { PeerClient } from './peer-client.js';
import type { CosignAnswer, CosignRequest } from '../schemas/peer.js';
import type { Db } from '../store/db.js';
import { lastSeal, leafHashesBetween } from '../store/seals.js';
import { logVkeys } from '../audit/log-keys.js';
import { consistencyProof, consistencyProofFromEdge, Frontier } from '../audit/merkle.js';

/**
 * Asks each peer KME to witness this KME's custody log: its latest checkpoint, every `everyMs` (src/audit/witness.ts
 * is the other side, behind /peer/v1/custody/cosign). The witness holds the size it cosigned last and wants a
 * consistency proof from there; it says which size it holds when asked with another. Cosignatures are kept beside
 * their seal (`audit_cosignature`) and go into the export bundle. A peer that does not answer is asked again next
 * time; nothing waits for witnesses.
 */
export function startCosigning(o: { db: Db; clients: Map<string, PeerClient>; everyMs: number; log: Logger }): () => Promise<void> {
  return startBackgroundJob({
    what: 'asking peers to witness the custody log',
    log: o.log,
    everyMs: o.everyMs,
    step: async () => {
      for (const client of o.clients.values()) await askToCosign(o.db, client);
    },
  });
}

/** One round with one witness; resolves once the latest checkpoint is cosigned (or the witness refused). */
export async function askToCosign(db: Db, client: PeerClient): Promise<CosignAnswer | undefined> {
  const seal = await lastSeal(db);
  if (!seal) return undefined;
  const { rows } = await db.query<{ done: boolean; last: string | null }>(
    `SELECT bool_or(tree_size = $2) AS done, max(tree_size) AS last FROM audit_cosignature WHERE witness = $1`,
    [client.kmeId, seal.treeSize],
  );
  if (rows[0]?.done) return undefined;
  const vkeys = await logVkeys(db);
  let fromSize = Number(rows[0]?.last ?? 0);
  for (let attempt = 0; attempt < 2; attempt++) {
    const request: CosignRequest = { checkpoint: seal.checkpoint, vkeys, from_size: fromSize, proof: await proofBetween(db, fromSize, seal.treeSize) };
    const answer = await client.post<CosignAnswer>('/peer/v1/custody/cosign', request);
    if (answer.cosigned) {
      await db.query(`INSERT INTO audit_cosignature (tree_size, witness, signatures) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, [
        seal.treeSize,
        answer.witness,
        answer.signatures,
      ]);
      return answer;
    }
    if (answer.held_size > seal.treeSize) throw new Error(`${client.kmeId} holds a checkpoint of size ${answer.held_size}, beyond this log's ${seal.treeSize}`);
    fromSize = answer.held_size; // the witness holds another size than we thought: prove from there
  }
  throw new Error(`${client.kmeId} would not take a consistency proof from the size it said it holds`);
}

/**
 * The consistency proof from the checkpoint of size `from` to that of size `to`, from the tree's edge at `from` and
 * the leaves sealed since: its cost is that of what changed since the witness last cosigned, not of the whole log.
 * A size this log has no seal of (its seals were rewritten since the witness cosigned) is proved from all the leaf
 * hashes instead: the witness is still asked, and will refuse if the history changed.
 */
async function proofBetween(db: Db, from: number, to: number): Promise<string[]> {
  if (from === 0 || from >= to) return [];
  const { rows } = await db.query<{ frontier: Buffer }>('SELECT frontier FROM audit_seal WHERE tree_size = $1', [from]);
  const proof = rows[0]
    ? consistencyProofFromEdge(Frontier.of(from, rows[0].frontier), await leafHashesBetween(db, from, to))
    : consistencyProof(from, await leafHashesBetween(db, 0, to));
  return proof.map((h) => h.toString('base64'));
}

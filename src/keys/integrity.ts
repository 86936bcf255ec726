import type { Barrier, IntegrityFailures } from '../barrier/barrier.js';
import { IntegrityError } from '../hsm/key-wrapper.js';
import type { Db } from '../store/db.js';

/**
 * Whose fault is a failed integrity check: the stored material (tampered with, corrupted: set it aside and carry
 * on) or the key-encryption key (a wrong HSM key or token, a lost mock KEK: setting material aside would destroy a
 * healthy pool one request at a time). When only some of what was opened failed, it is the material. When all
 * failed, a block stored elsewhere on the same link decides: if it opens, the KEK is fine.
 */
export async function integrityVerdict(
  db: Db,
  barrier: Barrier,
  err: IntegrityFailures,
): Promise<'material' | 'kek' | 'unknown'> {
  if (err.ids.length < err.total) return 'material';
  const failed = err.ids.flatMap((id) => ('firstSeq' in id ? [id] : []));
  // A relayed key has no link position: any stored chunk will do as a probe then.
  const linkId = failed[0]?.linkId ?? null;
  // Up to three other chunks, so that a second damaged chunk does not pass for a wrong key.
  const { rows } = await db.query(
    `SELECT link_id AS "linkId", first_seq::text AS "firstSeq", blocks, sealed FROM key_chunk
      WHERE ($1::text IS NULL OR link_id = $1) AND NOT set_aside AND first_seq <> ALL($2::bigint[])
      ORDER BY first_seq DESC LIMIT 3`,
    [linkId, failed.filter((f) => f.linkId === linkId).map((f) => f.firstSeq)],
  );
  const probes = rows as Array<{ linkId: string; firstSeq: string; blocks: number; sealed: Buffer }>;
  if (probes.length === 0) return 'unknown';
  for (const probe of probes) {
    try {
      (await barrier.open(probe.sealed, { linkId: probe.linkId, firstSeq: probe.firstSeq, blocks: probe.blocks })).fill(0);
      return 'material';
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
    }
  }
  return 'kek';
}

export const KEK_SUSPECT =
  'stored key material does not open with the current key-encryption key: is the KME using the right HSM token and key?';

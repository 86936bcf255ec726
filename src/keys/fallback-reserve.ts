import { randomBytes, randomUUID } from 'node:crypto';
import type { Barrier } from '../barrier/barrier.js';
import { wipe } from '../barrier/material.js';
import { auditBody } from '../audit/event.js';
import { fallbackMessage } from '../peers/fallback-message.js';
import { KEM_NAME, type KemPublicKey } from '../peers/pqc-envelope.js';
import type { DbClient } from '../store/db.js';
import { bindKeys, type KeyRow } from '../store/bind-keys.js';
import type { FallbackState } from './fallback-state.js';
import type { MasterRequest, Reserved } from './origin-reserve.js';

/**
 * The master's side of the link-failure fallback (docs/operators.md, "When a link fails"), in the transaction the
 * caller owns: for requests the pair's QKD pool could not serve and whose pairs allow it, makes the keys here (from the
 * operating system's CSPRNG), seals each under the KEK like any key held here, and binds them to fresh key_IDs exactly
 * as QKD keys are bound — RESERVED for slaves at a peer (with the keys sealed to that peer's ML-KEM-768+X25519 key in
 * the message each next hop gets), DELIVERED when every slave is here — with the same audit events, marked
 * `origin: pqc_fallback`. Records the link's switch to fallback with the first of them.
 *
 * Only for direct routes (every next hop is the slave's own KME): fallback keys are never relayed over trusted nodes.
 * `peerKeys` holds the public KEM key of every next hop, fetched by the caller before the transaction.
 */
export async function reserveFallback(
  c: DbClient,
  deps: { barrier: Barrier; kmeId: string; keyTtlMs: number; fallback: FallbackState },
  linkId: string,
  batch: MasterRequest[],
  peerKeys: Map<string, KemPublicKey>,
): Promise<Reserved[]> {
  const now = Date.now();
  const rows: Array<Promise<KeyRow>> = [];
  const audits: string[] = [];
  const results = batch.map((r) => {
    const remote = r.plan.hops.length > 0;
    const expiresAt = new Date(now + (r.ttlMs ?? deps.keyTtlMs));
    const keyIds = Array.from({ length: r.number }, () => randomUUID());
    const keyBytes = keyIds.map(() => randomBytes(r.sizeBits / 8));
    keyIds.forEach((keyId, i) => {
      const row: KeyRow = {
        keyId,
        linkId,
        masterSaeId: r.masterSaeId,
        originKmeId: deps.kmeId,
        sizeBits: r.sizeBits,
        state: remote ? 'RESERVED' : 'DELIVERED',
        localSlaves: r.plan.localSlaves,
        expiresAt,
        blockSeqs: [],
        origin: 'pqc_fallback',
      };
      rows.push(deps.barrier.seal(keyBytes[i]!, { keyId }).then((wrapped) => ({ ...row, wrapped })));
    });
    const outgoing = r.plan.hops.map((h) => ({
      peer: h.peer,
      padLinkId: h.link.linkId,
      padSeqs: [],
      message: fallbackMessage(
        {
          initiator_sae_id: r.masterSaeId,
          target_sae_ids: h.targets,
          keyIds,
          sizeBits: r.sizeBits,
          qkms_link_id: h.link.linkId,
          qkms_origin_kme_id: deps.kmeId,
          qkms_path: [deps.kmeId],
          qkms_expires_at: expiresAt.toISOString(),
        },
        keyBytes,
        peerKeys.get(h.peer)!,
      ),
    }));
    audits.push(
      auditBody({
        operation: remote ? 'reserve' : 'deliver_master',
        outcome: 'ok',
        actor: `sae:${r.masterSaeId}`,
        actorCert: r.certSha256,
        keyIds,
        detail: {
          link_id: linkId,
          slaves: r.slaveSaeIds,
          size_bits: r.sizeBits,
          origin: 'pqc_fallback',
          kem: KEM_NAME,
          ...(r.tags && Object.keys(r.tags).length ? { tags: r.tags } : {}),
          ...(remote ? { kme: deps.kmeId, hops: r.plan.hops.map((h) => ({ peer: h.peer, link_id: h.link.linkId, targets: h.targets })) } : {}),
        },
      }),
    );
    const keys = keyIds.map((key_ID, i) => ({ key_ID, key: keyBytes[i]!.toString('base64') }));
    // Nothing was spent on any link; a void still tells each next hop to destroy the keys.
    const spent = r.plan.hops.map((h) => ({ peer: h.peer, linkId: h.link.linkId, seqs: [] }));
    return { origin: 'pqc_fallback' as const, keys, keyIds, outgoing, spent, keyBytes };
  });
  try {
    const sealed = await Promise.all(rows);
    await deps.fallback.started(c, linkId, `no QKD material for ${batch[0]!.masterSaeId} → ${batch[0]!.slaveSaeIds.join(', ')}`);
    await bindKeys(c, { keys: sealed, from: 'owned', pads: [], cursors: [], auditBodies: audits });
  } finally {
    wipe(results.flatMap((x) => x.keyBytes));
  }
  return results.map(({ keyBytes: _, ...reserved }) => reserved);
}

import { randomBytes } from 'node:crypto';
import type { Barrier } from '../barrier/barrier.js';
import { wipe } from '../barrier/material.js';
import { fallbackMessage } from '../peers/fallback-message.js';
import { KEM_NAME, kemReady, type KemPublicKey } from '../peers/pqc-envelope.js';
import { unavailable } from '../errors.js';
import type { PeerKemKeys } from '../peers/peer-kem-keys.js';
import { withTransaction, type Db, type DbClient } from '../store/db.js';
import { bindKeys, type KeyRow } from '../store/bind-keys.js';
import type { FallbackState } from './fallback-state.js';
import { bindingAudit, type MasterRequest, type Reserved } from './origin-reserve.js';
import { newKeyId } from './key-id.js';

/**
 * Fallback keys for requests the QKD pool could not serve (each allows it: `MasterRequest.fallback`): fetches each
 * next hop's KEM key, then makes the keys in a transaction of their own. Per request: its keys, or the error to answer
 * (a 503 saying why; `timedOut()` when the deadline passed before the commit).
 */
export async function serveByFallback(
  deps: { db: Db; barrier: Barrier; kmeId: string; keyTtlMs: number; state: FallbackState; peerKeys: PeerKemKeys },
  linkId: string,
  requests: MasterRequest[],
  timedOut: () => Error,
): Promise<Array<Reserved | Error>> {
  const deadline = Math.min(...requests.map((r) => r.deadline));
  const keys = new Map<string, KemPublicKey>();
  const unreachable = new Map<string, string>();
  const peers = [...new Set(requests.flatMap((r) => r.plan.hops.map((h) => h.peer)))];
  if (peers.length > 0) await kemReady(); // a pair of this KME alone needs no KEM
  await Promise.all(
    peers.map((peer) =>
      deps.peerKeys.of(peer, Math.max(1, deadline - Date.now())).then(
        (k) => keys.set(peer, k),
        (err: Error) => unreachable.set(peer, err.message),
      ),
    ),
  );
  const able = requests.filter((r) => r.plan.hops.every((h) => keys.has(h.peer)));
  let made: Reserved[] = [];
  if (able.length > 0) {
    try {
      made = await withTransaction(deps.db, async (c) => {
        const reserved = await reserveFallback(c, { ...deps, fallback: deps.state }, linkId, able, keys);
        if (Date.now() >= deadline) throw timedOut();
        return reserved;
      });
    } catch (err) {
      return requests.map(() => err as Error);
    }
  }
  return requests.map((r) => {
    const at = able.indexOf(r);
    if (at >= 0) return made[at]!;
    const peer = r.plan.hops.find((h) => !keys.has(h.peer))!.peer;
    return unavailable(
      `no QKD material for ${r.masterSaeId} → ${r.slaveSaeIds[0]}, and the fallback could not reach ${peer}: ` +
        `${unreachable.get(peer)}; nothing was delivered, try again later`,
    );
  });
}

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
    const keyIds = Array.from({ length: r.number }, () => newKeyId());
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
    audits.push(bindingAudit(deps.kmeId, linkId, r, keyIds, { origin: 'pqc_fallback', kem: KEM_NAME }));
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

import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { Static } from 'typebox';
import type { VoidSchema } from '../schemas/peer.js';
import { withTransaction, type Db } from '../store/db.js';
import { destroyPeerCopies, endKeys, relayedTo } from '../store/keys.js';
import type { Forwarder } from './forwarder.js';
import { fromRanges } from './ranges.js';
import type { Topology } from './topology.js';

/**
 * The receiving side of `POST /kmapi/v1/ext_keys/void` (ETSI GS QKD 020's void): a peer could not complete a relay
 * and tells every KME that may hold its keys to destroy them, and to destroy their copies of the material it spent
 * on them. Idempotent: keys already gone and copies already destroyed are skipped. Keys this KME passed on are voided
 * further along the same way.
 */
export async function receiveVoid(
  deps: { db: Db; topology: Topology; forwarder: Forwarder; log: Logger },
  from: string,
  body: Static<typeof VoidSchema>,
): Promise<{ voided: number }> {
  const self = deps.topology.kmeId;
  const keyIds = body.key_ids.map((k) => k.toLowerCase());
  const link = body.qkms_link_id ? deps.topology.link(body.qkms_link_id) : undefined;
  if (body.qkms_link_id && link?.peerKmeId !== from) {
    throw new Error(`link ${body.qkms_link_id} is not a link between ${from} and ${self}`);
  }
  const { ended, onward } = await withTransaction(deps.db, async (c) => {
    const onward = await relayedTo(c, keyIds);
    const ended = await endKeys(c, keyIds, 'DESTROYED', (ids) =>
      auditBody({ operation: 'void', outcome: 'ok', actor: `kme:${from}`, keyIds: ids, detail: { reason: body.qkms_reason } }),
    );
    if (link && body.qkms_ranges?.length) {
      const seqs = fromRanges(body.qkms_ranges, 1 << 20);
      await destroyPeerCopies(c, link.linkId, { seqs }, (n) =>
        auditBody({
          operation: 'void',
          outcome: 'ok',
          actor: `kme:${from}`,
          detail: { reason: body.qkms_reason, link_id: link.linkId, spent_by_peer: n, ranges: body.qkms_ranges },
        }),
      );
    }
    return { ended, onward };
  });
  const byPeer = new Map<string, string[]>();
  for (const [keyId, peers] of onward) {
    for (const p of peers) if (p !== from) byPeer.set(p, [...(byPeer.get(p) ?? []), keyId]);
  }
  for (const [peer, ids] of byPeer) {
    const hopLink = deps.topology.linkTo(peer);
    if (hopLink) deps.forwarder.voidLater(peer, { keyIds: ids, linkId: hopLink.linkId, ranges: [], reason: body.qkms_reason });
  }
  if (ended.length > 0) deps.log.info({ from, keys: ended.length, reason: body.qkms_reason }, 'keys voided at a peer\'s word');
  return { voided: ended.length };
}

import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import { withTransaction, type Db } from '../store/db.js';
import { endKeys } from '../store/keys.js';
import type { Forwarder } from './forwarder.js';
import { toRanges } from './ranges.js';

/** Material a KME spent on one next hop for a set of keys (the key's own blocks, or one-time pads). */
export interface Spent {
  peer: string;
  linkId: string;
  seqs: string[];
}

/** Keys whose relay failed or may have failed, with what was spent on them and why. */
export interface Failed {
  keyIds: string[];
  spent: Spent[];
  why: string;
}

/**
 * Voids keys whose relay did not complete, wherever they may be: every peer that was sent material for them is
 * told to destroy the keys and its copies of that material (in the background, retried), and the keys are destroyed
 * here, audited `void`. The master's KME and a relay node do the same after a failure. Never throws: a local failure
 * is logged, and the keys' own expiry destroys them then.
 */
export async function voidEverywhere(
  deps: { db: Db; forwarder: Forwarder; kmeId: string; log: Logger },
  items: Failed[],
): Promise<void> {
  for (const item of items) {
    for (const s of item.spent) {
      deps.forwarder.voidLater(s.peer, { keyIds: item.keyIds, linkId: s.linkId, ranges: toRanges(s.seqs), reason: item.why });
    }
  }
  await withTransaction(deps.db, (c) =>
    endKeys(c, items.flatMap((x) => x.keyIds), 'DESTROYED', (ended) =>
      auditBody({
        operation: 'void',
        outcome: 'failed',
        actor: `kme:${deps.kmeId}`,
        keyIds: ended,
        detail: { reason: [...new Set(items.map((x) => x.why))].join('; ').slice(0, 500) },
      }),
    ),
  ).catch((err: Error) => deps.log.error({ err: { message: err.message } }, 'could not void keys locally; their expiry will destroy them'));
}

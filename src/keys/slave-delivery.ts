import type { Barrier } from '../barrier/barrier.js';
import { assemble, wipe } from '../barrier/material.js';
import { auditBody } from '../audit/event.js';
import { badRequest, EtsiMessage, KmsError, unauthorized } from '../errors.js';
import type { DbClient } from '../store/db.js';
import { chunksHolding } from '../store/chunks.js';
import { lockSlaveRows, recordSlaveDeliveries, type SlaveRow } from '../store/deliveries.js';
import type { KeyContainer, SaeCaller } from './types.js';
import { markOrigin } from './key-origin.js';

/** One Get key with key IDs request, checked for shape, waiting for its keys. */
export interface SlaveRequest {
  caller: SaeCaller;
  master: string;
  keyIds: string[];
  /** Epoch ms: past it the request gets a 503 and takes nothing. */
  deadline: number;
}

/**
 * Get key with key IDs for a batch of requests, in one transaction the caller owns: locks every slave row the
 * batch names (in key_ID, SAE order: no deadlock with other batches), decides each request in arrival order on those
 * rows — a request refused with 400/401 takes nothing and does not stop the others, and a key two requests of the
 * batch ask for goes to the first only, as if they had run one after the other — then opens the material of what was
 * granted (one read and one HSM call per chunk for the whole batch), records every delivery, erases what no slave
 * still waits for, and audits each request. Returns, per request, its keys or its KmsError.
 *
 * Throws (rolling back the whole batch) when the HSM or the database fails; `IntegrityFailures` when stored material
 * does not open (the caller retries the requests one by one to find whose keys they are).
 */
export async function deliverToSlaves(
  c: DbClient,
  deps: { barrier: Barrier; kmeId: string; tagsOf?: (master: string, slave: string) => Record<string, string> | undefined },
  batch: SlaveRequest[],
): Promise<Array<KeyContainer | KmsError>> {
  const { slaves: rows, material } = await lockSlaveRows(c, [...new Set(batch.flatMap((r) => r.keyIds))]);
  const decisions = batch.map((r) => {
    try {
      const destroy = checkSlaveMayFetch(rows, r.keyIds, r.caller.saeId, r.master, deps.kmeId);
      // Later requests of the batch see this delivery, as they would after its commit.
      for (const row of rows) if (row.saeId === r.caller.saeId && r.keyIds.includes(row.keyId)) row.delivered = true;
      return { destroy };
    } catch (err) {
      if (err instanceof KmsError) return err;
      throw err;
    }
  });
  const granted = batch.filter((_, i) => !(decisions[i] instanceof KmsError));
  if (granted.length === 0) return decisions as KmsError[];

  const keys = [...new Set(granted.flatMap((r) => r.keyIds))].flatMap((id) => material.get(id) ?? []);
  const relayed = keys.filter((k) => k.wrapped !== undefined);
  const chunks = await chunksHolding(c, keys.filter((k) => k.seqs.length > 0));
  const [opened, ownEnvelopes] = await Promise.all([
    deps.barrier.openChunks(chunks),
    deps.barrier.openAll(relayed.map((k) => ({ wrapped: k.wrapped!, id: { keyId: k.keyId } }))),
  ]);
  const sizeOf = new Map(rows.map((r) => [r.keyId, r.sizeBits]));
  const originOf = new Map(rows.map((r) => [r.keyId, r.origin]));
  const keyBytes = new Map<string, string>();
  for (const k of keys) {
    if (k.seqs.length > 0) keyBytes.set(k.keyId, assemble(opened.blocks(k.linkId, k.seqs), sizeOf.get(k.keyId)!).toString('base64'));
  }
  relayed.forEach((k, i) => keyBytes.set(k.keyId, assemble([ownEnvelopes[i]!], sizeOf.get(k.keyId)!).toString('base64')));
  opened.wipe();
  wipe(ownEnvelopes);

  const auditBodies: string[] = [];
  const destroyKeyIds: string[] = [];
  const answers = batch.map((r, i) => {
    const d = decisions[i]!;
    if (d instanceof KmsError) return d;
    const actor = { actor: `sae:${r.caller.saeId}`, actorCert: r.caller.certSha256 };
    const tags = deps.tagsOf?.(r.master, r.caller.saeId);
    const detail = { master: r.master, ...(tags && Object.keys(tags).length ? { tags } : {}) };
    auditBodies.push(auditBody({ operation: 'deliver_slave', outcome: 'ok', ...actor, keyIds: r.keyIds, detail }));
    if (d.destroy.length > 0) {
      auditBodies.push(auditBody({ operation: 'destroy', outcome: 'ok', ...actor, keyIds: d.destroy, detail: { reason: 'all slaves served' } }));
      destroyKeyIds.push(...d.destroy);
    }
    return markOrigin(
      r.keyIds.map((keyId) => ({ key_ID: keyId, key: keyBytes.get(keyId)! })),
      (keyId) => originOf.get(keyId)!,
    );
  });
  await recordSlaveDeliveries(c, {
    deliveries: granted.map((r) => ({ slaveSaeId: r.caller.saeId, keyIds: r.keyIds })),
    destroyKeyIds,
    auditBodies,
  });
  return answers;
}

/**
 * The 401/400 rules of Get key with key IDs, decided on the locked slave rows. Returns the keys whose material
 * may be erased after this delivery (no other slave here still waits for them).
 *
 * A key is fetchable when it was delivered to its master here, or — reserved here for a master at another KME —
 * once that KME reserved it here (its master only learns the key_ID after every KME confirmed). Never past its
 * time-to-live, and not while an operator holds it (suspended: 400, the request takes nothing).
 */
function checkSlaveMayFetch(rows: SlaveRow[], keyIds: string[], caller: string, master: string, self: string): string[] {
  const destroy: string[] = [];
  const notFound: string[] = [];
  const held: string[] = [];
  for (const keyId of keyIds) {
    const slaves = rows.filter((r) => r.keyId === keyId);
    const mine = slaves.find((r) => r.saeId === caller);
    if (slaves.length > 0 && !mine) {
      // §6.3: only an SAE named as slave or additional slave in the Get key request may fetch the key.
      throw unauthorized(`SAE ${caller} was not named as a slave for one or more of the keys requested`);
    }
    const fetchable =
      mine !== undefined &&
      !mine.expired &&
      (mine.keyState === 'DELIVERED' || (mine.keyState === 'RESERVED' && mine.originKmeId !== self));
    if (!mine || !fetchable || mine.delivered || mine.masterSaeId !== master) {
      notFound.push(keyId);
      continue;
    }
    if (mine.held) {
      held.push(keyId);
      continue;
    }
    if (slaves.every((r) => r === mine || r.delivered)) destroy.push(keyId);
  }
  if (notFound.length > 0) throw badRequest(EtsiMessage.keysNotFound, notFound.map((key_ID) => ({ key_ID })));
  if (held.length > 0) throw badRequest('one or more keys specified are suspended by an operator of this KME', held.map((key_ID) => ({ key_ID })));
  return destroy;
}

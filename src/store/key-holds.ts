import { insertAuditSql } from '../audit/event.js';
import type { DbClient } from './db.js';
import { queueErasureSql } from './keys.js';

/**
 * What operators do to keys at this KME (migration 0008, src/admin/key-admin.ts): hold, release, revoke as
 * compromised. Each function runs on a client in a transaction the caller owns and writes its audit event in the
 * same transaction; each is idempotent (keys already in the wanted state, or ended, are skipped) and returns the
 * key_IDs it changed, so the event names exactly those.
 */

/** One key's row, as an operator sees it (no material). */
export interface KeyRow {
  keyId: string;
  state: string;
  linkId: string;
  masterSaeId: string;
  originKmeId: string;
  sizeBits: number;
  slaves: string[];
  fetchedBy: string[];
  relayedTo: string[];
  heldAt: Date | null;
  createdAt: Date;
  expiresAt: Date;
  destroyedAt: Date | null;
  /** Where its material came from (migration 0013). */
  origin: 'qkd' | 'pqc_fallback';
}

/** The rows of the given keys that are still here (ended keys are compacted after a while). */
export async function keyRows(c: Pick<DbClient, 'query'>, keyIds: string[]): Promise<KeyRow[]> {
  const { rows } = await c.query(
    `SELECT key_id::text AS "keyId", state, link_id AS "linkId", master_sae_id AS "masterSaeId", origin_kme_id AS "originKmeId",
            size_bits AS "sizeBits", slaves, fetched_by AS "fetchedBy", relayed_to AS "relayedTo", held_at AS "heldAt",
            created_at AS "createdAt", expires_at AS "expiresAt", destroyed_at AS "destroyedAt", origin
       FROM qkd_key WHERE key_id = ANY($1::uuid[]) ORDER BY key_id`,
    [keyIds],
  );
  return rows as KeyRow[];
}

/**
 * Sets (`hold`) or clears the hold on live keys. A held key is not handed to any slave here until released; its
 * time-to-live keeps running. `auditBody` gets the key_IDs changed (none: no event).
 */
export async function setHold(c: DbClient, keyIds: string[], hold: boolean, auditBody: (changed: string[]) => string): Promise<string[]> {
  const { rows } = await c.query(
    `UPDATE qkd_key SET held_at = CASE WHEN $2 THEN now() ELSE NULL END
      WHERE key_id = ANY($1::uuid[]) AND state IN ('RESERVED', 'DELIVERED') AND (held_at IS NULL) = $2
      RETURNING key_id::text AS id`,
    [keyIds, hold],
  );
  return audited(c, rows as Array<{ id: string }>, auditBody);
}

/**
 * Revokes keys as compromised: the live ones become COMPROMISED, their material erased at once (a relayed key's
 * envelope dropped, its positions queued for erasure from their chunks), hold cleared; slaves still waiting get 400
 * not found. Keys that already ended stay as they are. One event records the revocation of all of them (what was
 * exposed matters to an auditor whether or not material was left); `auditBody` gets the key_IDs erased now.
 */
export async function compromiseKeys(c: DbClient, keyIds: string[], auditBody: (erased: string[]) => string): Promise<string[]> {
  const { rows } = await c.query(
    `WITH k AS (
       UPDATE qkd_key SET state = 'COMPROMISED', destroyed_at = now(), wrapped = NULL, kek_version = NULL, held_at = NULL
        WHERE key_id = ANY($1::uuid[]) AND state IN ('RESERVED', 'DELIVERED')
       RETURNING key_id, link_id, seqs),
     erase AS (${queueErasureSql('k')})
     SELECT key_id::text AS id FROM k`,
    [keyIds],
  );
  const erased = (rows as Array<{ id: string }>).map((r) => r.id).sort();
  await c.query(insertAuditSql(1), [[auditBody(erased)]]);
  return erased;
}

async function audited(c: DbClient, rows: Array<{ id: string }>, auditBody: (ids: string[]) => string): Promise<string[]> {
  const ids = rows.map((r) => r.id).sort();
  if (ids.length > 0) await c.query(insertAuditSql(1), [[auditBody(ids)]]);
  return ids;
}

import canonicalize from 'canonicalize';
import { auditBody, insertAuditSql } from '../audit/event.js';
import { withTransaction, type Db, type DbClient } from './db.js';
import type { ChangeActor } from './principals.js';

/**
 * Policies per SAE pair in PostgreSQL (migrations 0010 and 0012). A pair is unordered: `pairOf` sorts it. Every
 * change is a `policy` event of the custody log in the same transaction. The KME processes hold an image of the
 * table (src/policy/policy-book.ts) and reload it when `policiesStamp` changes.
 */

/**
 * What a pair's keys do when its QKD link or pool cannot serve a request: fail closed (503, the default) or let the
 * master's KME make the key and send it to the slave's KME encapsulated with ML-KEM-768+X25519.
 */
export type LinkFailure = 'fail_closed' | 'pqc_fallback';

export interface PairPolicy {
  /** The pair, sorted: saes[0] < saes[1]. */
  saes: [string, string];
  /** How long a key of the pair waits for its slaves before it is destroyed (EXPIRED); none: the KME's default. */
  keyTtlSeconds?: number;
  /** Below this many keys in the pool the pair draws from, the KME logs it and status warns. */
  minPoolKeys?: number;
  /** Keys the pair may take a minute at this KME; more get a 503. */
  maxKeysPerMinute?: number;
  /** When the pair's link cannot serve it; none: 'fail_closed'. */
  linkFailure?: LinkFailure;
  /** Recorded on every key delivered under the pair, in its custody events. */
  tags: Record<string, string>;
  source: 'config' | 'admin';
}

/** A policy as the table holds it: the column has a default, so a stored policy always says what it does. */
export interface StoredPolicy extends PairPolicy {
  linkFailure: LinkFailure;
  changedAt: Date;
}

export const pairOf = (x: string, y: string): [string, string] => (x < y ? [x, y] : [y, x]);

const COLUMNS = `sae_a, sae_b, key_ttl_seconds, min_pool_keys, max_keys_per_minute, link_failure, tags, source, changed_at`;

function fromRow(r: Record<string, unknown>): StoredPolicy {
  return {
    saes: [r.sae_a as string, r.sae_b as string],
    ...(r.key_ttl_seconds !== null ? { keyTtlSeconds: r.key_ttl_seconds as number } : {}),
    ...(r.min_pool_keys !== null ? { minPoolKeys: r.min_pool_keys as number } : {}),
    ...(r.max_keys_per_minute !== null ? { maxKeysPerMinute: r.max_keys_per_minute as number } : {}),
    linkFailure: r.link_failure as LinkFailure,
    tags: r.tags as Record<string, string>,
    source: r.source as 'config' | 'admin',
    changedAt: r.changed_at as Date,
  };
}

export async function loadPolicies(db: Pick<DbClient, 'query'>): Promise<StoredPolicy[]> {
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM pair_policy ORDER BY sae_a, sae_b`);
  return rows.map(fromRow);
}

/** Changes whenever a policy is written or deleted, by any process. */
export async function policiesStamp(db: Pick<Db, 'query'>): Promise<string> {
  const { rows } = await db.query(`SELECT count(*)::text || '/' || COALESCE(max(changed_at)::text, '') AS stamp FROM pair_policy`);
  return (rows[0] as { stamp: string }).stamp;
}

/** Sets a pair's policy (replacing the one it had), audited. Refuses to change a policy the config file owns. */
export async function setPolicy(db: Db, p: PairPolicy, by: ChangeActor): Promise<StoredPolicy> {
  return withTransaction(db, async (c) => {
    const was = await one(c, p.saes);
    if (was?.source === 'config' && p.source === 'admin') throw new PolicyChangeError(`the policy of ${p.saes.join(' and ')} comes from the config file: change it there`);
    await upsert(c, p);
    await c.query(insertAuditSql(1), [[event(was ? 'update' : 'set', p, by)]]);
    return (await one(c, p.saes))!;
  });
}

/** Deletes a pair's policy, audited; false when it had none. Refuses to delete one the config file owns. */
export async function deletePolicy(db: Db, saes: [string, string], by: ChangeActor): Promise<boolean> {
  return withTransaction(db, async (c) => {
    const was = await one(c, saes);
    if (!was) return false;
    if (was.source === 'config') throw new PolicyChangeError(`the policy of ${saes.join(' and ')} comes from the config file: change it there`);
    await c.query(`DELETE FROM pair_policy WHERE sae_a = $1 AND sae_b = $2`, saes);
    await c.query(insertAuditSql(1), [[event('delete', was, by)]]);
    return true;
  });
}

/**
 * Brings the config file's policies into the table at start: new ones inserted, changed ones updated, those the file
 * no longer lists deleted; each change audited. A pair an operator gave a policy cannot also be in the file.
 */
export async function seedPolicies(db: Db, fromConfig: readonly PairPolicy[], by: ChangeActor): Promise<void> {
  await withTransaction(db, async (c) => {
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('qkms policy seeding'))`);
    const stored = new Map((await loadPolicies(c)).map((p) => [p.saes.join('/'), p]));
    const events: string[] = [];
    for (const p of fromConfig) {
      const was = stored.get(p.saes.join('/'));
      stored.delete(p.saes.join('/'));
      if (was?.source === 'admin') throw new PolicyChangeError(`the policy of ${p.saes.join(' and ')} is in the config file but was set by an operator: remove it from one of the two`);
      if (was && canonicalize(comparable(was)) === canonicalize(comparable(p))) continue;
      await upsert(c, p);
      events.push(event(was ? 'update' : 'set', p, by));
    }
    for (const was of stored.values()) {
      if (was.source !== 'config') continue;
      await c.query(`DELETE FROM pair_policy WHERE sae_a = $1 AND sae_b = $2`, was.saes);
      events.push(event('delete', was, by, 'no longer listed in the config file'));
    }
    if (events.length) await c.query(insertAuditSql(1), [events]);
  });
}

/** A change refused for a reason the operator can act on. */
export class PolicyChangeError extends Error {
  override name = 'PolicyChangeError';
}

async function one(c: DbClient, saes: [string, string]): Promise<StoredPolicy | undefined> {
  const { rows } = await c.query(`SELECT ${COLUMNS} FROM pair_policy WHERE sae_a = $1 AND sae_b = $2`, saes);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

async function upsert(c: DbClient, p: PairPolicy): Promise<void> {
  await c.query(
    `INSERT INTO pair_policy (sae_a, sae_b, key_ttl_seconds, min_pool_keys, max_keys_per_minute, link_failure, tags, source)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (sae_a, sae_b) DO UPDATE SET key_ttl_seconds = $3, min_pool_keys = $4, max_keys_per_minute = $5,
       link_failure = $6, tags = $7, source = $8, changed_at = clock_timestamp()`,
    [p.saes[0], p.saes[1], p.keyTtlSeconds ?? null, p.minPoolKeys ?? null, p.maxKeysPerMinute ?? null, linkFailureOf(p), JSON.stringify(p.tags), p.source],
  );
}

/** What a policy does when its link cannot serve: left out, it fails closed (the column's default). */
const linkFailureOf = (p: PairPolicy): LinkFailure => p.linkFailure ?? 'fail_closed';

/**
 * What a policy says, without when or by whom: to tell a changed config entry from an unchanged one. A config entry
 * without link_failure equals a stored 'fail_closed', so the migration that added the column changes nothing.
 */
function comparable(p: PairPolicy) {
  return { saes: p.saes, ttl: p.keyTtlSeconds ?? null, min: p.minPoolKeys ?? null, max: p.maxKeysPerMinute ?? null, linkFailure: linkFailureOf(p), tags: p.tags };
}

function event(change: 'set' | 'update' | 'delete', p: PairPolicy, by: ChangeActor, reason?: string): string {
  return auditBody({
    operation: 'policy',
    outcome: 'ok',
    ...by,
    detail: {
      change,
      saes: p.saes,
      ...(change === 'delete' ? {} : comparablePolicyDetail(p)),
      source: p.source,
      ...(reason ? { reason } : {}),
    },
  });
}

function comparablePolicyDetail(p: PairPolicy): Record<string, unknown> {
  return {
    ...(p.keyTtlSeconds !== undefined ? { key_ttl_seconds: p.keyTtlSeconds } : {}),
    ...(p.minPoolKeys !== undefined ? { min_pool_keys: p.minPoolKeys } : {}),
    ...(p.maxKeysPerMinute !== undefined ? { max_keys_per_minute: p.maxKeysPerMinute } : {}),
    // Always named, the default too: the event alone tells an auditor whether the pair may get keys not made by QKD.
    link_failure: linkFailureOf(p),
    tags: p.tags,
  };
}

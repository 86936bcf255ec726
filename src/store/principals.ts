import canonicalize from 'canonicalize';
import type pg from 'pg';
import { auditBody, insertAuditSql } from '../audit/event.js';
import { roleName, type Principal, type PrincipalStatus, type Role } from '../auth/principals.js';
import { withTransaction, type Db, type DbClient } from './db.js';

/**
 * The registry of principals in PostgreSQL (migration 0007): who may call the KME, in which role. Every change is
 * a `principal` event of the custody log in the same transaction. Reads are for the in-memory image
 * (src/auth/principals.ts), which every KME process reloads when `principalsStamp` changes.
 */

type Queryable = Pick<pg.Pool, 'query'>;

/** Who made a change: an operator through the admin API, or the KME seeding from its config file. */
export interface ChangeActor {
  actor: string;
  actorCert?: string;
}

/** A change refused for a reason the caller can act on (unknown principal, revoked already, CN taken, …). */
export class PrincipalChangeError extends Error {
  override name = 'PrincipalChangeError';
  constructor(
    message: string,
    readonly kind: 'not_found' | 'conflict',
  ) {
    super(message);
  }
}

const COLUMNS = `role, id, certificate_cn, certificate_sha256, status, allowed_peers, tags, source, unlisted, created_at, changed_at`;

export interface StoredPrincipal extends Principal {
  createdAt: Date;
  changedAt: Date;
}

function fromRow(r: Record<string, unknown>): StoredPrincipal {
  return {
    role: r.role as Role,
    id: r.id as string,
    certificateCn: r.certificate_cn as string,
    ...(r.certificate_sha256 ? { certificateSha256: r.certificate_sha256 as string } : {}),
    status: r.status as PrincipalStatus,
    ...(r.allowed_peers ? { allowedPeers: r.allowed_peers as string[] } : {}),
    tags: r.tags as Record<string, string>,
    source: r.source as 'config' | 'admin',
    ...(r.unlisted ? { unlisted: true } : {}),
    createdAt: r.created_at as Date,
    changedAt: r.changed_at as Date,
  };
}

export async function loadPrincipals(db: Queryable): Promise<StoredPrincipal[]> {
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM principal ORDER BY role, id`);
  return rows.map(fromRow);
}

/** Changes whenever any principal is inserted or changed, by any process (each change draws a new change_seq). */
export async function principalsStamp(db: Queryable): Promise<string> {
  const { rows } = await db.query<{ stamp: string }>(`SELECT count(*) || ':' || COALESCE(sum(change_seq), 0) AS stamp FROM principal`);
  return rows[0]!.stamp;
}

type Change = 'enroll' | 'update' | 'unlist' | 'suspend' | 'resume' | 'revoke';

function event(change: Change, p: Principal, by: ChangeActor, reason?: string): string {
  return auditBody({
    operation: 'principal',
    outcome: 'ok',
    actor: by.actor,
    ...(by.actorCert ? { actorCert: by.actorCert } : {}),
    detail: {
      change,
      role: p.role,
      id: p.id,
      certificate_cn: p.certificateCn,
      ...(p.certificateSha256 ? { certificate_sha256: p.certificateSha256 } : {}),
      status: p.status,
      ...(p.allowedPeers ? { allowed_peers: p.allowedPeers } : {}),
      ...(Object.keys(p.tags).length ? { tags: p.tags } : {}),
      source: p.source,
      ...(reason ? { reason } : {}),
    },
  });
}

async function insert(c: DbClient, p: Principal): Promise<void> {
  await c.query(
    `INSERT INTO principal (role, id, certificate_cn, certificate_sha256, status, allowed_peers, tags, source)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [p.role, p.id, p.certificateCn, p.certificateSha256 ?? null, p.status, p.allowedPeers ?? null, JSON.stringify(p.tags), p.source],
  ).catch((err: unknown) => {
    throw conflictOf(err, p) ?? err;
  });
}

/** A unique violation as a clear refusal: the ID or the CN is someone's already (revoked principals included). */
function conflictOf(err: unknown, p: Principal): PrincipalChangeError | undefined {
  const e = err as { code?: string; constraint?: string };
  if (e.code !== '23505') return undefined;
  return e.constraint === 'principal_certificate_cn_key'
    ? new PrincipalChangeError(`certificate CN ${p.certificateCn} already names another principal (IDs and CNs are never reused, even after a revocation)`, 'conflict')
    : new PrincipalChangeError(`${roleName(p.role)} ${p.id} exists already (IDs are never reused, even after a revocation)`, 'conflict');
}

// Tags compare canonically (RFC 8785: keys sorted): jsonb gives them back in its own key order, not the file's.
const same = (a: Principal, b: Principal) =>
  a.certificateCn === b.certificateCn &&
  a.certificateSha256 === b.certificateSha256 &&
  JSON.stringify(a.allowedPeers ?? null) === JSON.stringify(b.allowedPeers ?? null) &&
  canonicalize(a.tags) === canonicalize(b.tags);

/**
 * Makes the table agree with the config file's principals, in one transaction (replicas starting together take
 * turns): new ones are inserted, changed ones updated (identity, allowed peers, tags: never the status an operator
 * set), and config principals the file no longer lists are marked unlisted. A principal an operator enrolled cannot
 * also be in the file: that is an error naming it. Returns the registry as it is after.
 */
export async function seedPrincipals(db: Db, fromConfig: readonly Principal[], by: ChangeActor): Promise<StoredPrincipal[]> {
  return withTransaction(db, async (c) => {
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('qkms principal seeding'))`);
    const stored = new Map((await loadPrincipals(c)).map((p) => [`${p.role}/${p.id}`, p]));
    const events: string[] = [];
    for (const p of fromConfig) {
      const was = stored.get(`${p.role}/${p.id}`);
      stored.delete(`${p.role}/${p.id}`);
      if (!was) {
        await insert(c, p);
        events.push(event('enroll', p, by));
      } else if (was.source === 'admin') {
        throw new PrincipalChangeError(`${roleName(p.role)} ${p.id} is listed in the config file but was enrolled by an operator: remove it from one of the two`, 'conflict');
      } else if (!same(was, p) || was.unlisted) {
        await c.query(
          `UPDATE principal SET certificate_cn = $3, certificate_sha256 = $4, allowed_peers = $5, tags = $6, unlisted = false
            WHERE role = $1 AND id = $2`,
          [p.role, p.id, p.certificateCn, p.certificateSha256 ?? null, p.allowedPeers ?? null, JSON.stringify(p.tags)],
        ).catch((err: unknown) => {
          throw conflictOf(err, p) ?? err;
        });
        events.push(event('update', { ...p, status: was.status }, by));
      }
    }
    for (const was of stored.values()) {
      if (was.source !== 'config' || was.unlisted) continue;
      await c.query(`UPDATE principal SET unlisted = true WHERE role = $1 AND id = $2`, [was.role, was.id]);
      events.push(event('unlist', was, by, 'no longer listed in the config file'));
    }
    if (events.length) await c.query(insertAuditSql(1), [events]);
    return loadPrincipals(c);
  });
}

/** Enrolls a new principal (source 'admin'). Refuses an ID or a CN that was ever used. */
export async function enrollPrincipal(db: Db, p: Principal, by: ChangeActor): Promise<StoredPrincipal> {
  return withTransaction(db, async (c) => {
    await insert(c, { ...p, source: 'admin' });
    await c.query(insertAuditSql(1), [[event('enroll', { ...p, source: 'admin' }, by)]]);
    return (await loadPrincipal(c, p.role, p.id))!;
  });
}

/** The status changes an operator may make, and from where. Revoked is final (the table's trigger says so too). */
const MOVES: Record<'suspend' | 'resume' | 'revoke', { from: PrincipalStatus[]; to: PrincipalStatus }> = {
  suspend: { from: ['active'], to: 'suspended' },
  resume: { from: ['suspended'], to: 'active' },
  revoke: { from: ['active', 'suspended'], to: 'revoked' },
};

/** Suspends, resumes or revokes a principal, with its event; refuses a move its present status does not allow. */
export async function changePrincipalStatus(
  db: Db,
  role: Role,
  id: string,
  change: keyof typeof MOVES,
  by: ChangeActor,
  reason?: string,
): Promise<StoredPrincipal> {
  return withTransaction(db, async (c) => {
    const { rows } = await c.query(`SELECT ${COLUMNS} FROM principal WHERE role = $1 AND id = $2 FOR UPDATE`, [role, id]);
    if (!rows[0]) throw new PrincipalChangeError(`no ${roleName(role)} ${id} is registered`, 'not_found');
    const was = fromRow(rows[0]);
    const move = MOVES[change];
    if (!move.from.includes(was.status)) {
      throw new PrincipalChangeError(`${roleName(role)} ${id} is ${was.status}: it cannot be ${change === 'resume' ? 'resumed' : `${change}d`}`, 'conflict');
    }
    await c.query(`UPDATE principal SET status = $3 WHERE role = $1 AND id = $2`, [role, id, move.to]);
    await c.query(insertAuditSql(1), [[event(change, { ...was, status: move.to }, by, reason)]]);
    return (await loadPrincipal(c, role, id))!;
  });
}

export async function loadPrincipal(c: Queryable, role: Role, id: string): Promise<StoredPrincipal | undefined> {
  const { rows } = await c.query(`SELECT ${COLUMNS} FROM principal WHERE role = $1 AND id = $2`, [role, id]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

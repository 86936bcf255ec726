import { auditBody, insertAuditSql } from '../audit/event.js';
import { NEWEST_SEALS_SQL, resealSeeds, sealVersionSql } from '../audit/log-keys.js';
import type { Barrier } from '../barrier/barrier.js';
import type { KeyWrapper } from '../hsm/key-wrapper.js';
import type { SwappableKeyWrapper } from '../hsm/swappable-wrapper.js';
import type { Logger } from '../log.js';
import { byteaArray, withTransaction, type Db } from '../store/db.js';
import type { ChangeActor } from '../store/principals.js';
import { reseal } from './eraser.js';

/** What `kms kek status` shows: the versions, what each still seals, and how much the re-wrap has left. */
export interface KekStatus {
  current: number;
  versions: Array<{ version: number; in_hsm: boolean; created_at?: string; destroyed_at?: string; chunks: number; keys: number; signing_keys: number }>;
  /** Rows still sealed under an older version than the current one. */
  rewrap_pending: number;
}

/**
 * KEK rotation without downtime (DESIGN §5; docs/operators.md "KEK rotation"):
 * 1. `rotate()` creates version n+1 in the HSM and puts it in use at once (a PKCS#11 wrapper is opened afresh and
 *    swapped in; calls in flight finish on the old one): everything sealed from then on is sealed under it.
 * 2. The re-wrap (`rewrapOnce`, a leader-only background job) moves what older versions seal, in small batches:
 *    chunks of material (re-sealed with a fresh data key, destroyed positions zeroed on the way), relayed keys' own
 *    envelopes, and the custody log's ML-DSA seed. It keeps no state of its own: it looks for rows under an older
 *    version, so a crash or a restart just resumes it.
 * 3. `destroyUnused` destroys an old version in the HSM once nothing refers to it (chunks set aside after a failed
 *    integrity check do not hold it back: they never open anyway), and no sooner than `graceMs` after the rotation
 *    (a wrapper replaced then has finished what it had in flight).
 * Every rotation and destruction is a `kek` custody event.
 */
export class KekRotation {
  private busy: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: {
      db: Db;
      wrapper: SwappableKeyWrapper;
      barrier: Barrier;
      /** Opens a fresh wrapper on the same HSM (it finds the versions present now). */
      reopen: () => Promise<KeyWrapper>;
      kmeId: string;
      log: Logger;
      /** Time after a rotation before an old version may be destroyed (default 60 s). */
      graceMs?: number;
    },
  ) {}

  /**
   * Records the version in use at start. With the rotations recorded as they happen and the versions in use when
   * migration 0011 ran, the table lists every version that ever sealed a row: the re-wrap and the destruction look
   * only at versions it lists.
   */
  async start(): Promise<void> {
    await this.deps.db.query(`INSERT INTO kek_version (version) VALUES ($1) ON CONFLICT DO NOTHING`, [this.deps.wrapper.currentVersion()]);
  }

  /**
   * Versions older than the current one and not destroyed yet, from the small kek_version table. None (the usual
   * case): the re-wrap and the destruction have nothing to do, and look no further — their queries scan whole tables.
   */
  private async olderVersions(current: number): Promise<number[]> {
    const { rows } = await this.deps.db.query<{ version: number }>(`SELECT version FROM kek_version WHERE version < $1 AND destroyed_at IS NULL`, [current]);
    return rows.map((r) => r.version);
  }

  /** Creates the next KEK version and puts it in use; one rotation at a time in this process. */
  rotate(by: ChangeActor, reason?: string): Promise<KekStatus> {
    const run = this.busy.then(() => this.rotateNow(by, reason));
    this.busy = run.catch(() => undefined);
    return run;
  }

  private async rotateNow(by: ChangeActor, reason?: string): Promise<KekStatus> {
    const { wrapper, db, log } = this.deps;
    const previous = wrapper.currentVersion();
    const held = await wrapper.listVersions();
    const next = Math.max(previous, ...held) + 1;
    await wrapper.createVersion(next);
    if (wrapper.needsReopen) {
      const fresh = await this.deps.reopen();
      if (fresh.currentVersion() !== next) {
        await fresh.close();
        throw new Error(`the HSM holds KEK version ${next} but a fresh session finds ${fresh.currentVersion()} current`);
      }
      wrapper.swap(fresh);
    }
    await withTransaction(db, async (c) => {
      await c.query(`INSERT INTO kek_version (version) VALUES ($1) ON CONFLICT DO NOTHING`, [next]);
      await c.query(insertAuditSql(1), [[auditBody({ operation: 'kek', outcome: 'ok', ...by, detail: { change: 'rotate', version: next, previous, ...(reason ? { reason } : {}) } })]]);
    });
    log.info({ by: by.actor, version: next, previous }, 'KEK rotated: new material is sealed under the new version; the re-wrap moves the rest');
    return this.status();
  }

  async status(): Promise<KekStatus> {
    const current = this.deps.wrapper.currentVersion();
    const [inHsm, { rows: known }, refs] = await Promise.all([
      this.deps.wrapper.listVersions(),
      this.deps.db.query<{ version: number; created_at: Date; destroyed_at: Date | null }>(`SELECT version, created_at, destroyed_at FROM kek_version ORDER BY version`),
      this.references(),
    ]);
    const versions = [...new Set([...inHsm, ...known.map((k) => k.version), ...refs.map((r) => r.version)])].sort((a, b) => a - b);
    return {
      current,
      versions: versions.map((v) => {
        const k = known.find((x) => x.version === v);
        const r = refs.find((x) => x.version === v);
        return {
          version: v,
          in_hsm: inHsm.includes(v),
          ...(k ? { created_at: k.created_at.toISOString() } : {}),
          ...(k?.destroyed_at ? { destroyed_at: k.destroyed_at.toISOString() } : {}),
          chunks: r?.chunks ?? 0,
          keys: r?.keys ?? 0,
          signing_keys: r?.seeds ?? 0,
        };
      }),
      rewrap_pending: refs.filter((r) => r.version < current).reduce((n, r) => n + r.chunks + r.keys + r.seeds, 0),
    };
  }

  /** Rows per KEK version: chunks (not set aside), relayed keys' envelopes, custody signing seeds (their newest seal). */
  private references() {
    return this.deps.db
      .query<{ version: number; chunks: number; keys: number; seeds: number }>(
        `SELECT version, sum(chunks)::int AS chunks, sum(keys)::int AS keys, sum(seeds)::int AS seeds FROM (
           SELECT kek_version AS version, count(*) AS chunks, 0 AS keys, 0 AS seeds FROM key_chunk WHERE NOT set_aside GROUP BY 1
           UNION ALL SELECT kek_version, 0, count(*), 0 FROM qkd_key WHERE kek_version IS NOT NULL GROUP BY 1
           UNION ALL SELECT ${sealVersionSql('sealed')}, 0, 0, count(*) FROM (${NEWEST_SEALS_SQL}) AS newest GROUP BY 1
         ) AS r GROUP BY version ORDER BY version`,
      )
      .then((r) => r.rows);
  }

  /** One batch of the re-wrap: up to `batch` chunks and relayed keys, and the signing seeds. Returns the rows moved. */
  async rewrapOnce(batch = 64): Promise<number> {
    const current = this.deps.wrapper.currentVersion();
    if ((await this.olderVersions(current)).length === 0) return 0;
    const chunks = await withTransaction(this.deps.db, async (c) => {
      const { rows } = await c.query<{ link_id: string; first: string; blocks: number; sealed: Buffer; gone: string }>(
        `SELECT link_id, first_seq::text AS first, blocks, sealed, gone::text AS gone FROM key_chunk
          WHERE kek_version < $1 AND NOT set_aside ORDER BY kek_version, link_id, first_seq LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [current, batch],
      );
      if (rows.length === 0) return 0;
      const resealed = await Promise.all(rows.map((r) => reseal(this.deps.barrier, r.link_id, r)));
      const sealed = byteaArray(resealed.map((r) => r.wrapped), 4);
      await c.query(
        `UPDATE key_chunk k SET sealed = t.sealed, kek_version = t.kek
           FROM unnest($1::text[], $2::bigint[], ${sealed.sql}, $3::int[]) AS t(link, first, sealed, kek)
          WHERE k.link_id = t.link AND k.first_seq = t.first`,
        [rows.map((r) => r.link_id), rows.map((r) => r.first), resealed.map((r) => r.kekVersion), ...sealed.params],
      );
      return rows.length;
    });
    const keys = await withTransaction(this.deps.db, async (c) => {
      const { rows } = await c.query<{ id: string; wrapped: Buffer }>(
        `SELECT key_id::text AS id, wrapped FROM qkd_key WHERE kek_version < $1 AND wrapped IS NOT NULL LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [current, batch],
      );
      for (const r of rows) {
        const plain = await this.deps.barrier.open(r.wrapped, { keyId: r.id });
        try {
          const again = await this.deps.barrier.seal(plain, { keyId: r.id });
          await c.query(`UPDATE qkd_key SET wrapped = $2, kek_version = $3 WHERE key_id = $1`, [r.id, again.wrapped, again.kekVersion]);
        } finally {
          plain.fill(0);
        }
      }
      return rows.length;
    });
    const seeds = await resealSeeds(this.deps.db, this.deps.wrapper, current);
    return chunks + keys + seeds;
  }

  /** Destroys in the HSM the old versions nothing refers to any more (see the class comment); returns them. */
  async destroyUnused(now = Date.now()): Promise<number[]> {
    const { wrapper, db, log } = this.deps;
    const current = wrapper.currentVersion();
    if ((await this.olderVersions(current)).length === 0) return [];
    const { rows } = await db.query<{ created_at: Date }>(`SELECT created_at FROM kek_version WHERE version = $1`, [current]);
    if (!rows[0] || now - rows[0].created_at.getTime() < (this.deps.graceMs ?? 60_000)) return [];
    const refs = await this.references();
    const unused = (await wrapper.listVersions()).filter((v) => v < current && !refs.some((r) => r.version === v));
    for (const v of unused) {
      await wrapper.destroyVersion(v);
      await withTransaction(db, async (c) => {
        await c.query(`INSERT INTO kek_version (version, destroyed_at) VALUES ($1, now()) ON CONFLICT (version) DO UPDATE SET destroyed_at = now()`, [v]);
        await c.query(insertAuditSql(1), [[auditBody({ operation: 'kek', outcome: 'ok', actor: `kme:${this.deps.kmeId}`, detail: { change: 'destroy', version: v } })]]);
      });
      log.info({ version: v }, 'old KEK version destroyed in the HSM: nothing refers to it any more');
    }
    // A PKCS#11 wrapper's sessions hold copies of the versions they found: open fresh ones without the destroyed.
    if (unused.length > 0 && wrapper.needsReopen) wrapper.swap(await this.deps.reopen());
    return unused;
  }
}

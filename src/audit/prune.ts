import type pg from 'pg';
import { eachLineOfFile, writeLinesToFile } from './bundle.js';
import { auditBody, insertAuditSql } from './event.js';
import { exportBundle, prunedUpTo } from './export.js';
import { logVkeys } from './log-keys.js';
import { BundleVerifier } from './verify.js';
import { parseVkey } from './vkeys.js';

export interface PruneResult {
  fromSize: number;
  upToSize: number;
  events: number;
  archive: string;
  archiveSha256: string;
}

/**
 * Retention: archives the sealed history up to a checkpoint as an export bundle, verifies the archive, and only then
 * removes those events from the database. The seals (checkpoints, leaf hashes, tree edges) stay: what remains
 * exports as a bundle that starts at the archive's last checkpoint, and verifies from there — continuity with the
 * archive is that checkpoint (pass it as the trusted checkpoint). The pruning is recorded (`audit_prune`, then a
 * `prune` event in the log itself, with the archive's SHA-256) in the transaction that removes the events; the
 * log's trigger lets no event go that no recorded pruning covers.
 *
 * Runs as the tables' owner (the KME's own role may not delete from the log). `upToSize` must be a checkpoint's
 * size beyond the last pruning; with `olderThan` instead, the newest checkpoint sealed before then is taken.
 * Returns undefined when there is nothing to prune.
 */
export async function pruneLog(
  db: pg.Pool,
  o: { archive: string; origin: string; kmeId: string; upToSize?: number; olderThan?: Date },
): Promise<PruneResult | undefined> {
  const fromSize = await prunedUpTo(db);
  const upToSize = o.upToSize ?? (await newestSealBefore(db, o.olderThan ?? new Date()));
  if (upToSize === undefined || upToSize <= fromSize) return undefined;

  const lines = exportBundle(db, { origin: o.origin, afterSize: fromSize, upToSize });
  const archiveSha256 = await writeLinesToFile(o.archive, lines, { exclusive: true }); // never overwrite an archive

  // The archive must stand on its own before anything is removed: read it back and verify it with the log's keys.
  const verifier = new BundleVerifier({ keys: (await logVkeys(db)).map(parseVkey) });
  await eachLineOfFile(o.archive, (line) => verifier.line(line));
  const report = verifier.finish();
  if (!report.ok || report.sealedSize !== upToSize) {
    throw new Error(`the archive ${o.archive} does not verify (${report.problem?.message ?? `it ends at ${report.sealedSize}`}): nothing was pruned`);
  }

  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL qkms.pruning = 'on'`);
    await client.query('INSERT INTO audit_prune (up_to_size, archive_sha256, events) VALUES ($1, $2, $3)', [upToSize, archiveSha256, report.events]);
    const detail = { from_size: fromSize, up_to_size: upToSize, events: report.events, gaps: report.gaps, archive_sha256: archiveSha256 };
    await client.query(insertAuditSql(1), [[auditBody({ operation: 'prune', outcome: 'ok', actor: `kme:${o.kmeId}`, detail })]]);
    const deleted = await client.query('DELETE FROM audit_event WHERE seq > $1 AND seq <= $2', [fromSize, upToSize]);
    if (deleted.rowCount !== report.events) throw new Error(`the database holds ${deleted.rowCount} events in that range, the archive ${report.events}: nothing was pruned`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  return { fromSize, upToSize, events: report.events, archive: o.archive, archiveSha256 };
}

async function newestSealBefore(db: pg.Pool, before: Date): Promise<number | undefined> {
  const { rows } = await db.query<{ s: string | null }>('SELECT max(tree_size) AS s FROM audit_seal WHERE sealed_at < $1', [before]);
  return rows[0]?.s == null ? undefined : Number(rows[0].s);
}

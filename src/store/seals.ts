import type pg from 'pg';

type Queryable = Pick<pg.Pool, 'query'>;

/** One row of `audit_seal` (migration 0006): the leaves one signed checkpoint added to the custody tree. */
export interface SealRow {
  treeSize: number;
  firstSeq: number;
  /** 32 bytes per leaf, for numbers firstSeq … treeSize. */
  leafHashes: Buffer;
  /** The numbers in that range that no event holds (their transactions rolled back). */
  gaps: number[];
  /** The tree's right edge at treeSize (src/audit/merkle.ts Frontier). */
  frontier: Buffer;
  /** The signed note of the checkpoint. */
  checkpoint: string;
  sealedAt: Date;
}

/** A seal without its leaf hashes (up to 1.6 MB each: only the export and the proofs read them). */
export type SealHead = Omit<SealRow, 'leafHashes'>;

const HEAD_COLUMNS = `tree_size, first_seq, gaps, frontier, checkpoint, sealed_at`;
const COLUMNS = `${HEAD_COLUMNS}, leaf_hashes`;

function headFromRow(r: Record<string, unknown>): SealHead {
  return {
    treeSize: Number(r.tree_size),
    firstSeq: Number(r.first_seq),
    gaps: (r.gaps as string[]).map(Number),
    frontier: r.frontier as Buffer,
    checkpoint: r.checkpoint as string,
    sealedAt: r.sealed_at as Date,
  };
}

const fromRow = (r: Record<string, unknown>): SealRow => ({ ...headFromRow(r), leafHashes: r.leaf_hashes as Buffer });

/** The latest seal (its checkpoint, size and gaps); its leaf hashes stay in the database (leafHashesBetween). */
export async function lastSeal(db: Queryable): Promise<SealHead | undefined> {
  const { rows } = await db.query(`SELECT ${HEAD_COLUMNS} FROM audit_seal ORDER BY tree_size DESC LIMIT 1`);
  return rows[0] ? headFromRow(rows[0]) : undefined;
}

/** Where the tree ends: the last seal's size and right edge (without its leaf hashes, which the sealer does not need). */
export async function treeEdge(db: Queryable): Promise<{ treeSize: number; frontier: Buffer } | undefined> {
  const { rows } = await db.query<{ tree_size: string; frontier: Buffer }>('SELECT tree_size, frontier FROM audit_seal ORDER BY tree_size DESC LIMIT 1');
  return rows[0] ? { treeSize: Number(rows[0].tree_size), frontier: rows[0].frontier } : undefined;
}

/**
 * Records a seal, only where it extends the last one: the sealer read the tree's edge before it sealed, and a seal
 * made on an edge that changed meanwhile would leave a hole in the tree. Two sealers (a leader that lost its lock a
 * moment ago, and the new one) cannot both extend the same tree either: the primary key on tree_size and the unique
 * first_seq refuse the second. Either way the caller's pass fails and the next one starts from the edge as it is.
 */
export async function insertSeal(db: Queryable, s: Omit<SealRow, 'sealedAt'>): Promise<void> {
  const r = await db.query(
    `INSERT INTO audit_seal (tree_size, first_seq, leaf_hashes, gaps, frontier, checkpoint)
     SELECT $1, $2, $3, $4, $5, $6 WHERE COALESCE((SELECT max(tree_size) FROM audit_seal), 0) = $2::int8 - 1`,
    [s.treeSize, s.firstSeq, s.leafHashes, s.gaps, s.frontier, s.checkpoint],
  );
  if (r.rowCount !== 1) throw new Error(`the seal of ${s.firstSeq}–${s.treeSize} no longer extends the tree (its edge moved while it was made)`);
}

/** Seals in order of size, those that end after `afterSize`, at most `limit`. */
export async function sealsAfter(db: Queryable, afterSize: number, limit: number): Promise<SealRow[]> {
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM audit_seal WHERE tree_size > $1 ORDER BY tree_size LIMIT $2`, [afterSize, limit]);
  return rows.map(fromRow);
}

/** The leaf hashes of the tree of `size` leaves (a checkpoint's size), as the sealer recorded them, in order. */
export function leafHashesUpTo(db: Queryable, size: number): Promise<Buffer[]> {
  return leafHashesBetween(db, 0, size);
}

/** The leaf hashes after the checkpoint of size `after` up to the one of size `upTo`, in order. */
export async function leafHashesBetween(db: Queryable, after: number, upTo: number): Promise<Buffer[]> {
  const { rows } = await db.query<{ h: Buffer }>(
    'SELECT leaf_hashes AS h FROM audit_seal WHERE tree_size > $1 AND tree_size <= $2 ORDER BY tree_size',
    [after, upTo],
  );
  const all = Buffer.concat(rows.map((r) => r.h));
  const leaves = Array.from({ length: all.length / 32 }, (_, i) => all.subarray(32 * i, 32 * i + 32));
  if (leaves.length !== upTo - after) throw new Error(`the seals from tree size ${after} to ${upTo} hold ${leaves.length} leaf hashes, not ${upTo - after}`);
  return leaves;
}

import type pg from 'pg';
import { sealsAfter, type SealRow } from '../store/seals.js';
import { BUNDLE_FORMAT, checkpointLine, endLine, eventLine, gapLine, type BundleHeader, type Cosignature } from './bundle.js';
import { parseCheckpoint } from './checkpoint.js';
import { parseNote } from './signed-note.js';
import { logVkeys } from './log-keys.js';

type Queryable = Pick<pg.Pool, 'query'>;

const EVENTS_PER_QUERY = 10_000;
const SEALS_PER_QUERY = 100;

/**
 * The custody log as an export bundle (src/audit/bundle.ts), line by line, in order, reading the database in pages:
 * memory stays bounded however long the log is. It writes what the database holds, as it is — a number that has
 * neither an event nor a sealed gap is simply absent — and leaves judging to the verifier.
 *
 * It holds the sealed history only: events after the last checkpoint may still have holes that transactions in
 * flight will fill (src/audit/settle.ts), so they wait for the next checkpoint (at most a second) and the next export.
 *
 * `afterSize` starts the bundle at the checkpoint of that tree size (it must be one): the continuation of an
 * archive that ended there. By default it starts where the last pruning ended (src/audit/prune.ts), or at the
 * beginning. `upToSize` ends it at that checkpoint (an archive); by default it ends at the latest.
 */
export async function* exportBundle(
  db: Queryable,
  opts: { origin: string; afterSize?: number; upToSize?: number; now?: Date },
): AsyncGenerator<string> {
  const afterSize = opts.afterSize ?? (await prunedUpTo(db));
  let start: BundleHeader['start'] = { size: 0, frontier: '', checkpoint: null };
  if (afterSize > 0) {
    const { rows } = await db.query<{ frontier: Buffer; checkpoint: string }>(`SELECT frontier, checkpoint FROM audit_seal WHERE tree_size = $1`, [afterSize]);
    if (!rows[0]) throw new Error(`no checkpoint of tree size ${afterSize} to start from`);
    start = { size: afterSize, frontier: rows[0].frontier.toString('base64'), checkpoint: rows[0].checkpoint };
  }
  // The log names itself in its checkpoints (only the note is read here: the loop below reads the seals whole).
  const first = await db.query<{ checkpoint: string }>('SELECT checkpoint FROM audit_seal WHERE tree_size > $1 ORDER BY tree_size LIMIT 1', [afterSize]);
  const origin = first.rows[0] ? parseCheckpoint(parseNote(first.rows[0].checkpoint).text).origin : opts.origin;
  const header: BundleHeader = {
    type: 'header',
    format: BUNDLE_FORMAT,
    origin,
    exported_at: (opts.now ?? new Date()).toISOString(),
    vkeys: await logVkeys(db),
    start,
  };
  yield JSON.stringify(header);
  const counts = { events: 0, gaps: 0, checkpoints: 0 };
  let size = afterSize;
  const end = opts.upToSize ?? Number.MAX_SAFE_INTEGER;
  for (;;) {
    const seals = (await sealsAfter(db, size, SEALS_PER_QUERY)).filter((s) => s.treeSize <= end);
    const cosigned = await cosignaturesOf(db, seals.map((s) => s.treeSize));
    for (const seal of seals) {
      yield* sealedRange(db, seal, counts);
      yield checkpointLine(seal.treeSize, seal.leafHashes, seal.checkpoint, cosigned.get(seal.treeSize));
      counts.checkpoints++;
      size = seal.treeSize;
    }
    if (seals.length < SEALS_PER_QUERY) break;
  }
  if (opts.upToSize !== undefined && size !== opts.upToSize) throw new Error(`no checkpoint of tree size ${opts.upToSize} to end at`);
  yield endLine(counts);
}

/** The tree size up to which events were pruned (0 when none were). */
export async function prunedUpTo(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ s: string | null }>('SELECT max(up_to_size) AS s FROM audit_prune');
  return Number(rows[0]?.s ?? 0);
}

async function cosignaturesOf(db: Queryable, sizes: number[]): Promise<Map<number, Cosignature[]>> {
  const { rows } = await db.query<{ tree_size: string; witness: string; signatures: string }>(
    `SELECT tree_size, witness, signatures FROM audit_cosignature WHERE tree_size = ANY($1::int8[]) ORDER BY tree_size, witness`,
    [sizes],
  );
  const out = new Map<number, Cosignature[]>();
  for (const r of rows) {
    const list = out.get(Number(r.tree_size)) ?? [];
    list.push({ witness: r.witness, signatures: r.signatures });
    out.set(Number(r.tree_size), list);
  }
  return out;
}

/** The events and gaps of one seal's range, in order. */
async function* sealedRange(db: Queryable, seal: SealRow, counts: { events: number; gaps: number }): AsyncGenerator<string> {
  const gaps = new Set(seal.gaps);
  let next = seal.firstSeq;
  const gapsBefore = function* (seq: number) {
    for (; next < seq; next++) {
      if (!gaps.has(next)) continue; // neither event nor gap: absent, as the database has it
      counts.gaps++;
      yield gapLine(next);
    }
  };
  for await (const e of events(db, seal.firstSeq - 1, seal.treeSize)) {
    yield* gapsBefore(e.seq);
    counts.events++;
    yield eventLine(e.seq, e.body);
    next = e.seq + 1;
  }
  yield* gapsBefore(seal.treeSize + 1);
}

/** Events with after < seq ≤ upTo, in order, a page at a time. */
async function* events(db: Queryable, after: number, upTo: number): AsyncGenerator<{ seq: number; body: string }> {
  for (let from = after; ; ) {
    const { rows } = await db.query<{ seq: string; body: string }>(
      `SELECT seq, body FROM audit_event WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT ${EVENTS_PER_QUERY}`,
      [from, upTo],
    );
    for (const r of rows) yield { seq: Number(r.seq), body: r.body };
    if (rows.length < EVENTS_PER_QUERY) return;
    from = Number(rows[rows.length - 1]!.seq);
  }
}

import { badRequest, KmsError } from '../errors.js';
import type { Db } from '../store/db.js';
import { lastSeal, leafHashesUpTo, sealsAfter, treeEdge } from '../store/seals.js';
import type { EventsPage, EventsQuery } from '../schemas/audit.js';
import { exportBundle } from './export.js';
import { logVkeys } from './log-keys.js';
import { consistencyProof, inclusionProof, type Hash } from './merkle.js';

const notFound = (message: string) => new KmsError(404, message);

/**
 * What the auditor API answers (src/routes/audit/): pages of events, checkpoints, RFC 9162 proofs against them, the
 * export bundle and the verifier keys. Reads only; every answer about the tree is pinned to a signed checkpoint, so
 * an auditor need not trust this service, only the keys it pinned.
 *
 * Proofs are computed from the sealed leaf hashes of every seal up to the tree size asked: linear in the log's
 * length (about a second per million events here). Tiles of precomputed subtree hashes are the known next step.
 */
export class AuditorService {
  constructor(
    private readonly db: Db,
    private readonly origin: string,
  ) {}

  async events(q: EventsQuery): Promise<EventsPage> {
    if (q.key_id && q.sae_id) throw badRequest('give key_id or sae_id, not both');
    const from = q.from_seq ?? 1;
    const limit = q.limit ?? 100;
    const params: unknown[] = [from, limit + 1];
    let filter = '';
    if (q.key_id) {
      params.push(q.key_id.toLowerCase());
      filter = 'AND key_ids @> ARRAY[$3::uuid]';
    } else if (q.sae_id) {
      params.push(`sae:${q.sae_id}`, q.sae_id);
      filter = `AND (actor = $3 OR (body::jsonb #> '{detail,slaves}') ? $4 OR (body::jsonb #> '{detail,local_slaves}') ? $4)`;
    }
    const [{ rows }, sealed] = await Promise.all([
      this.db.query<{ seq: string; body: string }>(`SELECT seq, body FROM audit_event WHERE seq >= $1 ${filter} ORDER BY seq LIMIT $2`, params),
      treeEdge(this.db),
    ]);
    const sealedSize = sealed?.treeSize ?? 0;
    const page = rows.slice(0, limit).map((r) => ({ seq: Number(r.seq), sealed: Number(r.seq) <= sealedSize, event: JSON.parse(r.body) }));
    return { events: page, ...(rows.length > limit ? { next_from_seq: Number(rows[limit]!.seq) } : {}) };
  }

  async latestCheckpoint() {
    const seal = await lastSeal(this.db);
    if (!seal) throw notFound('the log has no checkpoint yet');
    return { tree_size: seal.treeSize, checkpoint: seal.checkpoint, sealed_at: seal.sealedAt.toISOString() };
  }

  async checkpoints(fromSize = 0, limit = 100) {
    const seals = await sealsAfter(this.db, Math.max(0, fromSize - 1), limit + 1);
    const page = seals.slice(0, limit).map((s) => ({ tree_size: s.treeSize, checkpoint: s.checkpoint, sealed_at: s.sealedAt.toISOString() }));
    return { checkpoints: page, ...(seals.length > limit ? { next_from_size: seals[limit]!.treeSize } : {}) };
  }

  async inclusion(seq: number, treeSize?: number) {
    const { size, checkpoint, leaves } = await this.tree(treeSize);
    if (seq > size) throw badRequest(`seq ${seq} is not in the tree of size ${size}`);
    const proof = inclusionProof(seq - 1, leaves);
    return { seq, leaf_index: seq - 1, tree_size: size, leaf_hash: b64(leaves[seq - 1]!), proof: proof.map(b64), checkpoint };
  }

  async consistency(first: number, second?: number) {
    const { size, checkpoint, leaves } = await this.tree(second);
    if (first > size) throw badRequest(`first (${first}) is larger than second (${size})`);
    if (first > 0 && !(await this.sealOf(first))) throw notFound(`no checkpoint of tree size ${first}`);
    return { first, second: size, proof: consistencyProof(first, leaves).map(b64), checkpoint };
  }

  /** The export bundle's lines; refuses at once (404) a start that is not a checkpoint's size. */
  async exportLines(afterSize?: number): Promise<AsyncGenerator<string>> {
    if (afterSize && !(await this.sealOf(afterSize))) throw notFound(`no checkpoint of tree size ${afterSize} to start from`);
    return exportBundle(this.db, { origin: this.origin, afterSize });
  }

  async vkeys() {
    return { vkeys: await logVkeys(this.db) };
  }

  private async sealOf(size: number): Promise<{ checkpoint: string } | undefined> {
    const { rows } = await this.db.query<{ checkpoint: string }>('SELECT checkpoint FROM audit_seal WHERE tree_size = $1', [size]);
    return rows[0];
  }

  /** The leaf hashes of the tree of a checkpoint's size (default: the latest), as the sealer recorded them. */
  private async tree(treeSize?: number): Promise<{ size: number; checkpoint: string; leaves: Hash[] }> {
    const target = treeSize ?? (await treeEdge(this.db))?.treeSize;
    if (target === undefined) throw notFound('the log has no checkpoint yet');
    const seal = await this.sealOf(target);
    if (!seal) throw notFound(`no checkpoint of tree size ${target}`);
    return { size: target, checkpoint: seal.checkpoint, leaves: await leafHashesUpTo(this.db, target) };
  }
}

const b64 = (h: Buffer) => h.toString('base64');

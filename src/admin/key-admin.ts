import { auditBody } from '../audit/event.js';
import { notFound } from '../errors.js';
import type { Forwarder } from '../peers/forwarder.js';
import type { Topology } from '../peers/topology.js';
import type { KeyChange, KeyChangeResult, KeyView, LinkHoldersView, ReceiptsView } from '../schemas/admin-keys.js';
import { custodyOf, holdersIn, holdersOfLink, receivedBy, type CustodyStep } from '../store/custody-queries.js';
import { withTransaction, type Db, type DbClient } from '../store/db.js';
import { compromiseKeys, keyRows, setHold, type KeyRow } from '../store/key-holds.js';
import { endKeys } from '../store/keys.js';
import type { ChangeActor } from '../store/principals.js';
import type { Logger } from '../log.js';

/**
 * What operators do to keys (the admin API's /admin/v1/keys, `kms key …`; DESIGN §5), framework-free.
 *
 * - suspend / resume: a hold at this KME (its slaves get 400 while it is held; its time-to-live keeps running).
 *   Peer KMEs keep their own copies: hold the key there too (`kms key show` says where it was relayed).
 * - revoke: COMPROMISED. Live material is erased here at once and every peer KME that may hold the key is told to
 *   void it; the answer and the custody event name every SAE that received it here. Keys that already ended are
 *   recorded as compromised all the same (the auditor's record of what was exposed).
 * - destroy: material erased here and voided at the peers; slaves still waiting get 400 not found.
 *
 * Each change is one transaction with its custody event. The holders a revocation names are read after the keys'
 * rows are locked, so no delivery can slip in between (deliveries lock the same rows).
 */
export class KeyAdmin {
  constructor(
    private readonly deps: { db: Db; topology: Topology; forwarder: Forwarder; log: Logger },
  ) {}

  async show(keyId: string): Promise<KeyView> {
    const id = keyId.toLowerCase();
    const [rows, custody] = await Promise.all([keyRows(this.deps.db, [id]), custodyOf(this.deps.db, [id])]);
    const steps = custody.get(id)!;
    if (rows.length === 0 && steps.length === 0) throw notFound(`key ${keyId} is not known at this KME (never here, or its custody was pruned)`);
    return { ...view(id, rows[0], steps), custody: steps.map((s) => ({ seq: s.seq, at: s.at.toISOString(), actor: s.actor, operation: s.operation, outcome: s.outcome })) };
  }

  async change(operation: KeyChange, req: { key_ids: string[]; reason?: string }, by: ChangeActor): Promise<KeyChangeResult> {
    const ids = [...new Set(req.key_ids.map((k) => k.toLowerCase()))];
    const event = (keyIds: string[], detail: Record<string, unknown>) =>
      auditBody({ operation, outcome: 'ok', ...by, keyIds, detail: { ...detail, ...(req.reason ? { reason: req.reason } : {}) } });
    const { changed, erased, before, custody } = await withTransaction(this.deps.db, async (c) => {
      const before = await lockKeys(c, ids);
      const custody = await custodyOf(c, ids);
      if (operation === 'suspend' || operation === 'resume') {
        return { changed: await setHold(c, ids, operation === 'suspend', (keyIds) => event(keyIds, {})), erased: [], before, custody };
      }
      if (operation === 'destroy') {
        const ended = await endKeys(c, ids, 'DESTROYED', (keyIds) => event(keyIds, { by_operator: true }));
        return { changed: ended, erased: ended, before, custody };
      }
      // Revoke records every key known here as compromised, ended or not; it erases what material is left.
      const known = ids.filter((id) => before.has(id) || custody.get(id)!.length > 0);
      const holders = [...new Set(known.flatMap((id) => holdersIn(custody.get(id)!).map((h) => h.saeId)))].sort();
      const erased = known.length === 0 ? [] : await compromiseKeys(c, known, (ended) => event(known, { erased: ended, holders }));
      return { changed: known, erased, before, custody };
    });
    const why = `${operation === 'revoke' ? 'revoked as compromised' : 'destroyed'} by ${by.actor} at ${this.deps.topology.kmeId}${req.reason ? `: ${req.reason}` : ''}`;
    const voidedAt = operation === 'revoke' || operation === 'destroy' ? this.voidAtPeers(ids, before, custody, why) : [];
    const done = new Set(changed);
    return {
      operation,
      changed: [...done],
      erased,
      ...(voidedAt.length > 0 ? { voided_at: voidedAt } : {}),
      unchanged: ids.filter((id) => !done.has(id)).map((id) => ({ key_ID: id, why: whyUnchanged(operation, before.get(id), custody.get(id)!) })),
      ...(operation === 'revoke'
        ? { holders: ids.flatMap((id) => holdersIn(custody.get(id)!).map((h) => ({ key_ID: id, sae_id: h.saeId, as: h.as, at: h.at.toISOString() }))) }
        : {}),
    };
  }

  async received(q: { saeId: string; since: Date; until?: Date; limit: number; afterSeq?: number }): Promise<ReceiptsView> {
    const receipts = await receivedBy(this.deps.db, { ...q, limit: q.limit + 1 });
    const page = receipts.slice(0, q.limit);
    return {
      sae_id: q.saeId,
      since: q.since.toISOString(),
      keys: page.map((r) => ({ key_ID: r.keyId, as: r.as, at: r.at.toISOString(), ...(r.linkId ? { link_id: r.linkId } : {}), seq: r.seq })),
      ...(receipts.length > q.limit ? { next_after_seq: page[page.length - 1]!.seq } : {}),
    };
  }

  async holders(linkId: string, since: Date): Promise<LinkHoldersView> {
    if (!this.deps.topology.link(linkId)) throw notFound(`link ${linkId} is not a link of this KME`);
    const holders = await holdersOfLink(this.deps.db, linkId, since);
    return {
      link_id: linkId,
      since: since.toISOString(),
      holders: holders.map((h) => ({ sae_id: h.saeId, as: h.as, keys: h.keys, first_at: h.first.toISOString(), last_at: h.last.toISOString() })),
    };
  }

  /**
   * Tells every adjacent KME that may hold one of the keys to void it (in the background, retried; a KME further on
   * hears it from the one in between). Returns the KMEs asked. Also for keys that already ended here: a key's
   * origin keeps no copy once its master has it, while the slave's KME still does.
   */
  private voidAtPeers(ids: string[], rows: Map<string, KeyRow>, custody: Map<string, CustodyStep[]>, reason: string): string[] {
    const byPeer = new Map<string, string[]>();
    for (const id of ids) {
      for (const peer of peersHolding(rows.get(id), custody.get(id)!, this.deps.topology.kmeId)) {
        byPeer.set(peer, [...(byPeer.get(peer) ?? []), id]);
      }
    }
    const asked: string[] = [];
    for (const [peer, keyIds] of byPeer) {
      const link = this.deps.topology.linkTo(peer);
      if (!link) continue; // not adjacent: the KME in between passes the void on
      this.deps.forwarder.voidLater(peer, { keyIds, linkId: link.linkId, ranges: [], reason: reason.slice(0, 200) });
      asked.push(peer);
    }
    if (asked.length > 0) this.deps.log.info({ peers: asked, keys: ids.length }, 'asked peer KMEs to void keys an operator ended');
    return asked.sort();
  }
}

async function lockKeys(c: DbClient, ids: string[]): Promise<Map<string, KeyRow>> {
  await c.query(`SELECT 1 FROM qkd_key WHERE key_id = ANY($1::uuid[]) ORDER BY key_id FOR UPDATE`, [ids]);
  return new Map((await keyRows(c, ids)).map((r) => [r.keyId, r]));
}

/** The adjacent KMEs a key went to or came from, by its row and its custody events here. */
function peersHolding(row: KeyRow | undefined, steps: CustodyStep[], self: string): Set<string> {
  const peers = new Set<string>(row?.relayedTo ?? []);
  if (row && row.originKmeId !== self) peers.add(row.originKmeId);
  for (const s of steps) {
    if (s.actor.startsWith('kme:') && s.actor !== `kme:${self}` && s.operation === 'reserve') peers.add(s.actor.slice(4));
    const relayed = s.detail.relayed_to;
    if (Array.isArray(relayed)) for (const p of relayed) peers.add(String(p));
    const hops = s.detail.hops;
    if (Array.isArray(hops)) for (const h of hops) if (h && typeof h === 'object' && 'peer' in h) peers.add(String(h.peer));
  }
  peers.delete(self);
  return peers;
}

const ENDED_BY: Record<string, string> = { destroy: 'DESTROYED', void: 'DESTROYED', expire: 'EXPIRED', revoke: 'COMPROMISED' };

/** A key's state from its row, or — once the row is compacted — from how its custody ended. */
function stateOf(row: KeyRow | undefined, steps: CustodyStep[]): string {
  if (row) return row.state;
  const end = [...steps].reverse().find((s) => s.outcome === 'ok' && ENDED_BY[s.operation]);
  return end ? ENDED_BY[end.operation]! : 'DESTROYED';
}

function whyUnchanged(operation: KeyChange, row: KeyRow | undefined, steps: CustodyStep[]): string {
  if (!row && steps.length === 0) return 'not known at this KME';
  const state = stateOf(row, steps);
  if (state !== 'RESERVED' && state !== 'DELIVERED') return `already ended (${state})`;
  if (operation === 'suspend') return 'already suspended';
  if (operation === 'resume') return 'not suspended';
  return state;
}

function view(id: string, row: KeyRow | undefined, steps: CustodyStep[]): Omit<KeyView, 'custody'> {
  const bound = steps.find((s) => s.operation === 'reserve' || s.operation === 'deliver_master');
  const tagged = steps.find((s) => s.detail.tags && typeof s.detail.tags === 'object');
  return {
    key_ID: id,
    state: stateOf(row, steps),
    suspended: row?.heldAt != null,
    ...(row || bound?.detail.link_id ? { link_id: row?.linkId ?? String(bound!.detail.link_id) } : {}),
    ...(row ? { master_SAE_ID: row.masterSaeId, origin_kme: row.originKmeId, size: row.sizeBits, slaves: row.slaves } : {}),
    // The row says it while it lives; the binding event, which outlives it, too.
    ...(row || bound ? { key_origin: row?.origin ?? (bound!.detail.origin === 'pqc_fallback' ? 'pqc_fallback' : 'qkd') } : {}),
    ...(row ? { created_at: row.createdAt.toISOString(), expires_at: row.expiresAt.toISOString() } : {}),
    ...(row?.destroyedAt ? { ended_at: row.destroyedAt.toISOString() } : {}),
    ...(row && row.relayedTo.length > 0 ? { relayed_to: row.relayedTo } : {}),
    holders: holdersIn(steps).map((h) => ({ sae_id: h.saeId, as: h.as, at: h.at.toISOString() })),
    ...(tagged ? { tags: tagged.detail.tags as Record<string, string> } : {}),
  };
}

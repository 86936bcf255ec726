import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import type { Outgoing } from '../peers/forwarder.js';
import { toRanges } from '../peers/ranges.js';
import type { Spent } from '../peers/void-keys.js';
import type { DbClient } from '../store/db.js';
import { claimOwned, cursorsAfter, type OwnedClaim } from '../store/chunks.js';
import { bindKeys, type KeyRow } from '../store/bind-keys.js';
import { assemble, wipe, xor } from '../barrier/material.js';
import type { DeliveryPlan, Hop } from '../peers/routing.js';
import type { KeyOrigin } from './key-origin.js';
import { newKeyId } from './key-id.js';

/** One Get key request, checked and routed, waiting for its keys. */
export interface MasterRequest {
  plan: DeliveryPlan;
  masterSaeId: string;
  certSha256: string;
  /** The path's slave first, then the additional slaves. */
  slaveSaeIds: string[];
  number: number;
  sizeBits: number;
  blocksPerKey: number;
  /** Epoch ms: past it the request gets a 503 and takes nothing (or, after its keys were reserved, burns them). */
  deadline: number;
  /** True once the client went away: its keys must not be committed as delivered. */
  abandoned: () => boolean;
  /** How long its keys wait for their slaves (the pair's policy); none: the KME's default. */
  ttlMs?: number;
  /** The pair's policy tags, recorded in the keys' custody events. */
  tags?: Record<string, string>;
  /**
   * Every pair of the request allows the link-failure fallback and its route is direct: when the QKD pool cannot
   * serve it, the request gets fallback keys (src/keys/fallback-reserve.ts) instead of a 503.
   */
  fallback?: boolean;
}

export interface DeliveredKey {
  key_ID: string;
  key: string;
}

/** What the first transaction made of a request: its keys, and what must reach each next hop. */
export interface Reserved {
  origin: KeyOrigin;
  keys: DeliveredKey[];
  keyIds: string[];
  outgoing: Outgoing[];
  /** Per next hop: the material it spent there (for a void). */
  spent: Spent[];
}

/**
 * The master's side, first transaction of a batch of requests sharing a material link: claims owned material (and
 * one-time pads on the links of relay hops), opens it, binds it to fresh key_IDs and audits. A request whose keys
 * have no remote slave is DELIVERED at once (the single-KME path: one transaction per batch, as before); the others
 * are RESERVED until every next hop confirmed (settled by the caller's second transaction).
 *
 * Requests are served in order while the claimed material lasts; one that does not fit gets `undefined` and takes
 * nothing, one whose client gave up or whose deadline passed gets `'expired'` and takes nothing. Throws (and so rolls back everything) when the HSM fails; `IntegrityFailures` names the blocks to set
 * aside before trying again.
 */
export async function reserveAtOrigin(
  c: DbClient,
  deps: { barrier: Barrier; kmeId: string; keyTtlMs: number },
  linkId: string,
  batch: MasterRequest[],
): Promise<Array<Reserved | 'expired' | undefined>> {
  const need = (r: MasterRequest) => r.number * r.blocksPerKey;
  // A client that gave up, or whose time ran out while it queued, takes nothing.
  const gone = batch.map((r) => r.abandoned() || Date.now() >= r.deadline);
  const alive = batch.filter((_, i) => !gone[i]);
  if (alive.length === 0) return batch.map(() => 'expired');
  const material = await claimOwned(c, linkId, alive.reduce((n, r) => n + need(r), 0));
  const padLinks = new Map<string, number>();
  for (const r of alive) for (const h of r.plan.hops) if (!h.direct) padLinks.set(h.link.linkId, (padLinks.get(h.link.linkId) ?? 0) + need(r));
  const pads = new Map<string, OwnedClaim>();
  for (const [padLink, n] of padLinks) pads.set(padLink, await claimOwned(c, padLink, n));

  // Plan: which positions each request gets, in arrival order, while material and every pad it needs last. Served
  // requests take a prefix of each claim, so the cursors move past exactly what was used.
  let used = 0;
  const padUsed = new Map<string, number>();
  const plans = batch.map((r, i) => {
    if (gone[i]) return undefined;
    const n = need(r);
    const relay = r.plan.hops.filter((h) => !h.direct);
    const fits =
      used + n <= material.seqs.length && relay.every((h) => (padUsed.get(h.link.linkId) ?? 0) + n <= (pads.get(h.link.linkId)?.seqs.length ?? 0));
    if (!fits) return undefined;
    const seqs = material.seqs.slice(used, (used += n));
    const padsByHop = relay.map((h) => {
      const from = padUsed.get(h.link.linkId) ?? 0;
      padUsed.set(h.link.linkId, from + n);
      return { hop: h, seqs: pads.get(h.link.linkId)!.seqs.slice(from, from + n) };
    });
    return { request: r, seqs, padsByHop, keyIds: Array.from({ length: r.number }, () => newKeyId()) };
  });
  const served = plans.filter((p): p is NonNullable<typeof p> => p !== undefined);
  // Nothing served: every claimed chunk is released untouched at commit.
  if (served.length === 0) return plans.map((p, i) => (gone[i] ? 'expired' : undefined));

  const cursors = [
    ...cursorsAfter(material, used),
    ...[...pads].flatMap(([padLink, claim]) => cursorsAfter(claim, padUsed.get(padLink) ?? 0)),
  ];
  const touched = new Set(cursors.map((x) => `${x.linkId}/${x.firstSeq}`));
  const opened = await deps.barrier.openChunks(
    [material, ...pads.values()].flatMap((claim) => claim.chunks).filter((ch) => touched.has(`${ch.id.linkId}/${ch.id.firstSeq}`)),
  );
  const now = Date.now();
  const rows: KeyRow[] = [];
  const audits: string[] = [];
  const results = served.map((p) => {
    const { request: r } = p;
    const expiresAt = new Date(now + (r.ttlMs ?? deps.keyTtlMs));
    const remote = r.plan.hops.length > 0;
    const per = r.blocksPerKey;
    const ofKey = (seqs: string[], i: number) => seqs.slice(i * per, (i + 1) * per);
    const keyBytes = p.keyIds.map((_, i) => assemble(opened.blocks(linkId, ofKey(p.seqs, i)), r.sizeBits));
    const padBytes = p.padsByHop.map((x) => p.keyIds.map((_, i) => assemble(opened.blocks(x.hop.link.linkId, ofKey(x.seqs, i)), r.sizeBits)));
    p.keyIds.forEach((keyId, i) =>
      rows.push({
        keyId,
        linkId,
        masterSaeId: r.masterSaeId,
        originKmeId: deps.kmeId,
        sizeBits: r.sizeBits,
        state: remote ? 'RESERVED' : 'DELIVERED',
        localSlaves: r.plan.localSlaves,
        expiresAt,
        blockSeqs: ofKey(p.seqs, i),
      }),
    );
    const outgoing: Outgoing[] = r.plan.hops.map((h) => {
      const padded = p.padsByHop.findIndex((x) => x.hop === h);
      const seqs = padded >= 0 ? p.padsByHop[padded]!.seqs : p.seqs;
      return {
        peer: h.peer,
        padLinkId: h.link.linkId,
        padSeqs: padded >= 0 ? seqs : [],
        message: {
          initiator_sae_id: r.masterSaeId,
          target_sae_ids: h.targets,
          keys: p.keyIds.map((key_id, i) => ({
            key_id,
            qkms_size: r.sizeBits,
            qkms_ranges: toRanges(ofKey(seqs, i)),
            ...(padded >= 0 ? { value: xor(keyBytes[i]!, padBytes[padded]![i]!).toString('base64') } : {}),
          })),
          qkms_link_id: h.link.linkId,
          qkms_origin_kme_id: deps.kmeId,
          qkms_path: [deps.kmeId],
          qkms_expires_at: expiresAt.toISOString(),
        },
      };
    });
    audits.push(
      bindingAudit(deps.kmeId, linkId, r, p.keyIds, { blocks: p.seqs }, (h) => (h.direct ? undefined : p.padsByHop.find((x) => x.hop === h)!.seqs)),
    );
    const keys = p.keyIds.map((key_ID, i) => ({ key_ID, key: keyBytes[i]!.toString('base64') }));
    wipe([...keyBytes, ...padBytes.flat()]);
    const spent = r.plan.hops.map((h) => {
      const x = p.padsByHop.find((y) => y.hop === h);
      return { peer: h.peer, linkId: h.link.linkId, seqs: x ? x.seqs : p.seqs };
    });
    return { origin: 'qkd' as const, keys, keyIds: p.keyIds, outgoing, spent };
  });
  opened.wipe();
  await bindKeys(c, {
    keys: rows,
    from: 'owned',
    pads: served.flatMap((p) => p.padsByHop.flatMap((x) => x.seqs.map((seq) => ({ linkId: x.hop.link.linkId, seq, from: 'owned' as const })))),
    cursors,
    auditBodies: audits,
  });
  let s = 0;
  return plans.map((p, i) => (gone[i] ? 'expired' : p ? results[s++] : undefined));
}

/**
 * The event that binds a request's keys at the master's KME: `reserve` when slaves at other KMEs must confirm first,
 * `deliver_master` otherwise. `material` says what the keys are made of (`blocks` of the link, or a fallback's
 * `origin` and KEM); `padOf` the one-time pad a hop's copy is sent under, if any.
 */
export function bindingAudit(
  kmeId: string,
  linkId: string,
  r: MasterRequest,
  keyIds: string[],
  material: Record<string, unknown>,
  padOf: (hop: Hop) => string[] | undefined = () => undefined,
): string {
  const remote = r.plan.hops.length > 0;
  return auditBody({
    operation: remote ? 'reserve' : 'deliver_master',
    outcome: 'ok',
    actor: `sae:${r.masterSaeId}`,
    actorCert: r.certSha256,
    keyIds,
    detail: {
      link_id: linkId,
      slaves: r.slaveSaeIds,
      size_bits: r.sizeBits,
      ...material,
      ...(r.tags && Object.keys(r.tags).length ? { tags: r.tags } : {}),
      ...(remote
        ? {
            kme: kmeId,
            hops: r.plan.hops.map((h) => {
              const pad = padOf(h);
              return { peer: h.peer, link_id: h.link.linkId, targets: h.targets, ...(pad ? { pad } : {}) };
            }),
          }
        : {}),
    },
  });
}

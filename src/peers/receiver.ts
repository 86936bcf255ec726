import type { PoolGate } from '../pool/pool-gate.js';
import type { PolicyBook } from '../policy/policy-book.js';
import type { Principals } from '../auth/principals.js';
import { checkSharing } from '../keys/sharing.js';
import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import { KmsError } from '../errors.js';
import { assemble, wipe, xor } from '../barrier/material.js';
import { planDelivery, type DeliveryPlan } from './routing.js';
import type { Logger } from '../log.js';
import type { ExtKeys, ExtKeysAck, ExtKeysBatch } from '../schemas/peer.js';
import { withTransaction, type Db, type DbClient, type Queryable } from '../store/db.js';
import { chunksHolding, claimOwned, cursorsAfter, type OwnedClaim } from '../store/chunks.js';
import { ascending } from '../store/positions.js';
import { bindKeys, type KeyRow } from '../store/bind-keys.js';
import { MaterialGoneError, settleForwarded } from '../store/keys.js';
import type { Forwarder, Outgoing } from './forwarder.js';
import { fromRanges, toRanges } from './ranges.js';
import { voidEverywhere, type Spent } from './void-keys.js';
import type { Topology } from './topology.js';
import { openFallbackKeys } from './fallback-message.js';
import { KEM_NAME, kemReady, type OwnKemKey } from './pqc-envelope.js';

type Ack = ExtKeysAck['acks'][number];

/**
 * The receiving side of `POST /kmapi/v1/ext_keys`: a peer reserves keys here for slaves attached to this KME, or
 * passes keys on through this KME (a trusted node) towards slaves further away.
 *
 * For each request: check it (the link is the sender's, the positions are the sender's material, the key_IDs are
 * new, the slaves are known and reachable without going back), then in one transaction for the whole batch read the
 * material (the key's own blocks, or the one-time pad its encrypted value came with), bind it to the key_IDs for the
 * local slaves, spend own pads for the next hops, and audit. Then pass the keys on (one round trip per next hop for
 * the batch) and ack `relayed` only when every KME beyond confirmed; otherwise void what was passed on and what is
 * held here, and ack `failed`. Nothing is released to a slave before its master has the key_IDs, which happens only
 * after every target confirmed (ETSI GS QKD 020's rule).
 */
export class ExtKeysReceiver {
  constructor(
    private readonly deps: {
      db: Db;
      barrier: Barrier;
      topology: Topology;
      forwarder: Forwarder;
      maxKeyTtlMs: number;
      log: Logger;
      /** The registry: this KME's slaves that operators suspended or revoked get no reservation. */
      principals?: Principals;
      /** Operators' holds on pools: a relay onward spends none of a held pool's one-time pads. */
      pools?: PoolGate;
      /**
       * Policies per SAE pair: a pair's own time-to-live may be longer than `maxKeyTtlMs`, and only a pair whose
       * policy here says pqc_fallback takes fallback keys.
       */
      policies?: PolicyBook;
      /** This KME's KEM key, which fallback keys are sealed to. */
      kem: OwnKemKey;
    },
  ) {}

  async receive(from: string, batch: ExtKeysBatch): Promise<ExtKeysAck> {
    const deadline = Date.now() + batch.qkms_deadline_ms;
    const acks: Ack[] = batch.requests.map((r) => ({ key_ids: r.keys.map((k) => k.key_id), status: 'relayed' }));
    const plans = batch.requests.map((r, i) => {
      try {
        return this.check(from, r);
      } catch (err) {
        acks[i] = { key_ids: acks[i]!.key_ids, status: 'failed', message: (err as Error).message };
        return undefined;
      }
    });
    // Fallback keys are opened before the transaction, so that an envelope that does not open fails its request only.
    const fallback = new Map<number, Buffer[]>();
    if (batch.requests.some((r) => r.qkms_pqc)) await kemReady();
    plans.forEach((p, i) => {
      const r = batch.requests[i]!;
      if (!p || !r.qkms_pqc) return;
      try {
        fallback.set(i, openFallbackKeys(this.deps.kem, r));
      } catch (err) {
        plans[i] = undefined;
        acks[i] = { key_ids: acks[i]!.key_ids, status: 'failed', message: (err as Error).message };
      }
    });
    try {
      return await this.receiveChecked(from, batch, plans, acks, deadline, fallback);
    } finally {
      for (const keys of fallback.values()) wipe(keys);
    }
  }

  private async receiveChecked(
    from: string,
    batch: ExtKeysBatch,
    plans: Array<DeliveryPlan | undefined>,
    acks: Ack[],
    deadline: number,
    fallback: Map<number, Buffer[]>,
  ): Promise<ExtKeysAck> {
    const valid = plans.flatMap((p, i) => (p ? [{ i, request: batch.requests[i]!, plan: p, fallback: fallback.get(i) }] : []));
    if (valid.length === 0) return { acks };

    let held: Array<{ i: number; request: ExtKeys; plan: DeliveryPlan; outgoing: Outgoing[]; spent: Spent[] }>;
    try {
      // Passing keys on claims own pads (locked until the binding commits): a transaction. Otherwise the binding is
      // the only write, and it checks and locks by itself: one statement, no BEGIN and no COMMIT.
      const relays = valid.some((v) => v.plan.hops.length > 0);
      held = relays ? await withTransaction(this.deps.db, (tx) => this.hold(from, valid, tx)) : await this.hold(from, valid);
    } catch (err) {
      const message = err instanceof MaterialGoneError || err instanceof KmsError ? err.message : 'could not store the keys';
      if (!(err instanceof MaterialGoneError)) this.deps.log.warn({ err: { message: (err as Error).message }, from }, 'ext_keys failed');
      for (const v of valid) acks[v.i] = { key_ids: acks[v.i]!.key_ids, status: 'failed', message };
      return { acks };
    }

    const onward = held.filter((h) => h.outgoing.length > 0);
    if (onward.length > 0) {
      const whys = await this.deps.forwarder.sendGrouped(onward.map((h) => h.outgoing), deadline);
      const ok: typeof onward = [];
      const failed: Array<{ h: (typeof onward)[number]; why: string }> = [];
      onward.forEach((h, n) => (whys[n] ? failed.push({ h, why: whys[n] }) : ok.push(h)));
      if (ok.length > 0) {
        try {
          await settleForwarded(
            this.deps.db,
            ok.flatMap((h) => h.request.keys.map((k) => ({ keyId: k.key_id, relayedTo: h.plan.hops.map((x) => x.peer) }))),
            false,
            ok.map((h) => this.relayAudit(from, h.request, h.plan)),
          );
        } catch (err) {
          for (const h of ok) failed.push({ h, why: `could not record the relay: ${(err as Error).message}` });
        }
      }
      if (failed.length > 0) {
        await voidEverywhere(
          { ...this.deps, kmeId: this.deps.topology.kmeId },
          failed.map((f) => ({ keyIds: f.h.request.keys.map((k) => k.key_id), spent: f.h.spent, why: f.why })),
        );
        for (const f of failed) acks[f.h.i] = { key_ids: acks[f.h.i]!.key_ids, status: 'failed', message: f.why };
      }
    }
    return { acks };
  }

  /** Checks one request and routes its targets from here; throws with the reason to ack `failed`. */
  private check(from: string, r: ExtKeys): DeliveryPlan {
    const { topology } = this.deps;
    const link = topology.link(r.qkms_link_id);
    if (!link || link.peerKmeId !== from) throw new Error(`link ${r.qkms_link_id} is not a link between ${from} and ${topology.kmeId}`);
    if (r.qkms_path.includes(topology.kmeId)) throw new Error(`relay loop: ${topology.kmeId} is already on the path`);
    if (r.qkms_path[r.qkms_path.length - 1] !== from) throw new Error('qkms_path must end with the sender');
    const ids = new Set(r.keys.map((k) => k.key_id.toLowerCase()));
    if (ids.size !== r.keys.length) throw new Error('a key_id is named twice');
    for (const k of r.keys) {
      if (r.qkms_pqc) {
        if (k.qkms_ranges || k.value !== undefined) throw new Error(`key ${k.key_id}: a fallback key carries neither positions nor a value`);
        continue;
      }
      if (!k.qkms_ranges) throw new Error(`key ${k.key_id}: qkms_ranges missing`);
      const blocks = Math.ceil(k.qkms_size / link.blockBits);
      if (k.qkms_ranges.reduce((n, x) => n + x.count, 0) !== blocks) throw new Error(`key ${k.key_id}: ${blocks} positions expected`);
      // Material is stored and read in position order: a key's positions must come in that order too.
      if (!ascending(fromRanges(k.qkms_ranges, blocks))) throw new Error(`key ${k.key_id}: positions must be ascending`);
      if (k.value !== undefined && Buffer.from(k.value, 'base64').length * 8 !== k.qkms_size) {
        throw new Error(`key ${k.key_id}: value is not ${k.qkms_size} bits`);
      }
    }
    const plan = planDelivery(topology, r.target_sae_ids, { material: link, exclude: [...r.qkms_path] });
    for (const slave of plan.localSlaves) checkSharing(this.deps.principals, r.initiator_sae_id, slave);
    if (r.qkms_pqc) {
      if (plan.hops.length > 0) throw new Error(`fallback keys are for slaves of ${topology.kmeId} only, never relayed on`);
      // Both ends must allow it: a pair whose policy here forbids fallback never gets a fallback key here.
      for (const slave of plan.localSlaves) {
        if (!this.deps.policies?.allowsFallback(r.initiator_sae_id, slave)) {
          throw new Error(`the policy of ${r.initiator_sae_id} and ${slave} at ${topology.kmeId} does not allow fallback keys (link_failure: pqc_fallback)`);
        }
      }
    }
    this.deps.pools?.checkHandOut(plan.hops.map((h) => h.link.linkId));
    return plan;
  }

  /** How much longer than `maxKeyTtlMs` this KME's policies let the keys of these pairs wait (0: no longer). */
  private longerTtlMs(master: string, slaves: string[]): number {
    const ttls = slaves.flatMap((s) => this.deps.policies?.of(master, s)?.keyTtlSeconds ?? []);
    return Math.max(0, ...ttls.map((t) => t * 1000 - this.deps.maxKeyTtlMs));
  }

  /**
   * Reads, opens and binds a batch's material, and claims own pads for the next hops. `tx`: the transaction, needed
   * when any request passes keys on (the pads' chunks stay locked until the binding commits); none: each statement on
   * its own. Material read there is used only if the binding then finds every position still free, and a free
   * position's material never changes (re-sealing a chunk changes its envelope and erases only what is gone).
   */
  private async hold(from: string, valid: Array<{ i: number; request: ExtKeys; plan: DeliveryPlan; fallback?: Buffer[] | undefined }>, tx?: DbClient) {
    const { barrier, topology } = this.deps;
    const c: Queryable = tx ?? this.deps.db;
    const rows: Array<Promise<KeyRow>> = [];
    const incomingPads: Array<{ linkId: string; seq: string; from: 'peer' }> = [];
    const ownPads: Array<{ linkId: string; seq: string; from: 'owned' }> = [];
    const audits: string[] = [];
    const out: Array<{ i: number; request: ExtKeys; plan: DeliveryPlan; outgoing: Outgoing[]; spent: Spent[] }> = [];
    const expiresCap = Date.now() + this.deps.maxKeyTtlMs;
    // One read and one round of HSM work for the whole batch (it usually names one link), not one per request.
    // A fallback key has no positions: its material is in the message (`fallback`, opened already).
    const wanted = valid.map((v) => ({ ...v, perKey: v.request.keys.map((k) => (k.qkms_ranges ? fromRanges(k.qkms_ranges, 1 << 20) : [])) }));
    // Material is read and opened only where it is used: to undo a one-time pad, or to pass a key on. A key reserved
    // here for local slaves only stays sealed until a slave fetches it; the binding checks its positions.
    const opens = (w: (typeof wanted)[number]) => w.plan.hops.length > 0 || w.request.keys.some((k) => k.value !== undefined);
    const used = wanted.filter(opens).map((w) => ({ linkId: w.request.qkms_link_id, seqs: w.perKey.flat() }));
    const chunks = await chunksHolding(c, used);
    for (const u of used) {
      if (!u.seqs.every((seq) => chunks.some((ch) => inChunk(u.linkId, seq, ch.id)))) {
        throw new MaterialGoneError(`material on link ${u.linkId} is not available here (missing, already used, or not the sender's)`);
      }
    }
    const openedAll = await barrier.openChunks(chunks);
    // Own pads for the next hops, claimed once per link for the whole batch and handed out in order.
    const padNeed = new Map<string, number>();
    for (const w of wanted) {
      for (const hop of w.plan.hops) {
        const n = w.request.keys.reduce((sum, k) => sum + Math.ceil(k.qkms_size / hop.link.blockBits), 0);
        padNeed.set(hop.link.linkId, (padNeed.get(hop.link.linkId) ?? 0) + n);
      }
    }
    const padSupply = new Map<string, { claim: OwnedClaim; next: number }>();
    for (const [padLink, n] of padNeed) {
      if (!tx) throw new Error('own pads are claimed only inside a transaction');
      const claim = await claimOwned(tx, padLink, n);
      if (claim.seqs.length < n) throw new MaterialGoneError(`not enough key material on link ${padLink} to relay on`);
      padSupply.set(padLink, { claim, next: 0 });
    }
    for (const { i, request: r, plan, perKey, fallback } of wanted) {
      const linkId = r.qkms_link_id;
      const expiresAt = new Date(Math.min(Date.parse(r.qkms_expires_at), expiresCap + this.longerTtlMs(r.initiator_sae_id, plan.localSlaves)));
      const keyBytes: Buffer[] = [];
      const opened = opens({ request: r, plan, perKey, i });
      for (const [n, k] of r.keys.entries()) {
        const relayed = k.value !== undefined;
        const parts = opened ? openedAll.blocks(linkId, perKey[n]!) : [];
        const key = fallback
          ? fallback[n]!
          : relayed
            ? xor(Buffer.from(k.value!, 'base64'), assemble(parts, k.qkms_size))
            : opened
              ? assemble(parts, k.qkms_size)
              : undefined;
        if (key && !fallback) keyBytes.push(key);
        if (relayed) for (const seq of perKey[n]!) incomingPads.push({ linkId, seq, from: 'peer' });
        const row: KeyRow = {
          keyId: k.key_id.toLowerCase(),
          linkId,
          masterSaeId: r.initiator_sae_id,
          originKmeId: r.qkms_origin_kme_id,
          sizeBits: k.qkms_size,
          state: 'RESERVED',
          localSlaves: plan.localSlaves,
          expiresAt,
          blockSeqs: relayed ? [] : perKey[n]!,
          ...(fallback ? { origin: 'pqc_fallback' as const } : {}),
        };
        // A relayed or fallback key is wrapped here; all of a batch's at once (the HSM batches concurrent calls).
        rows.push(relayed || fallback ? barrier.seal(key!, { keyId: row.keyId }).then((wrapped) => ({ ...row, wrapped })) : Promise.resolve(row));
      }
      const { outgoing, spent } = await this.onward(r, plan, keyBytes, padSupply, ownPads);
      wipe(keyBytes);
      audits.push(this.reserveAudit(from, r, plan, perKey));
      out.push({ i, request: r, plan, outgoing, spent });
    }
    openedAll.wipe();
    await bindKeys(c, {
      keys: await Promise.all(rows),
      from: 'peer',
      pads: [...incomingPads, ...ownPads],
      cursors: [...padSupply.values()].flatMap((x) => cursorsAfter(x.claim, x.next)),
      auditBodies: audits,
    });
    return out;
  }

  /** Messages for the next hops of one request: its keys encrypted with pads of this KME's own material. */
  private async onward(
    r: ExtKeys,
    plan: DeliveryPlan,
    keyBytes: Buffer[],
    padSupply: Map<string, { claim: OwnedClaim; next: number }>,
    ownPads: Array<{ linkId: string; seq: string; from: 'owned' }>,
  ): Promise<{ outgoing: Outgoing[]; spent: Spent[] }> {
    const outgoing: Outgoing[] = [];
    const spent: Spent[] = [];
    for (const hop of plan.hops) {
      const perKey = r.keys.map((k) => Math.ceil(k.qkms_size / hop.link.blockBits));
      const supply = padSupply.get(hop.link.linkId)!;
      const pads = supply.claim.seqs.slice(supply.next, (supply.next += perKey.reduce((a, b) => a + b, 0)));
      const opened = await this.deps.barrier.openChunks(
        supply.claim.chunks.filter((ch) => pads.some((seq) => inChunk(hop.link.linkId, seq, ch.id))),
      );
      let o = 0;
      const keys = r.keys.map((k, n) => {
        const mine = pads.slice(o, (o += perKey[n]!));
        const pad = assemble(opened.blocks(hop.link.linkId, mine), k.qkms_size);
        const value = xor(keyBytes[n]!, pad).toString('base64');
        pad.fill(0);
        return { key_id: k.key_id.toLowerCase(), qkms_size: k.qkms_size, qkms_ranges: toRanges(mine), value };
      });
      opened.wipe();
      for (const seq of pads) ownPads.push({ linkId: hop.link.linkId, seq, from: 'owned' });
      const seqs = pads;
      spent.push({ peer: hop.peer, linkId: hop.link.linkId, seqs });
      outgoing.push({
        peer: hop.peer,
        padLinkId: hop.link.linkId,
        padSeqs: seqs,
        message: {
          initiator_sae_id: r.initiator_sae_id,
          target_sae_ids: hop.targets,
          keys,
          qkms_link_id: hop.link.linkId,
          qkms_origin_kme_id: r.qkms_origin_kme_id,
          qkms_path: [...r.qkms_path, this.deps.topology.kmeId],
          qkms_expires_at: r.qkms_expires_at,
        },
      });
    }
    return { outgoing, spent };
  }

  private reserveAudit(from: string, r: ExtKeys, plan: DeliveryPlan, perKey: string[][]): string {
    return auditBody({
      operation: 'reserve',
      outcome: 'ok',
      actor: `kme:${from}`,
      keyIds: r.keys.map((k) => k.key_id.toLowerCase()),
      detail: {
        link_id: r.qkms_link_id,
        master: r.initiator_sae_id,
        origin: r.qkms_origin_kme_id,
        path: r.qkms_path,
        local_slaves: plan.localSlaves,
        ...(r.qkms_pqc ? {} : { [r.keys[0]?.value !== undefined ? 'pad' : 'blocks']: perKey.flat() }),
        next_hops: plan.hops.map((h) => ({ peer: h.peer, link_id: h.link.linkId, targets: h.targets })),
        ...(r.qkms_pqc ? { origin: 'pqc_fallback', kem: KEM_NAME } : {}),
      },
    });
  }

  private relayAudit(from: string, r: ExtKeys, plan: DeliveryPlan): string {
    return auditBody({
      operation: 'relay',
      outcome: 'ok',
      actor: `kme:${from}`,
      keyIds: r.keys.map((k) => k.key_id.toLowerCase()),
      detail: { relayed_to: plan.hops.map((h) => h.peer), kept_for: plan.localSlaves },
    });
  }
}

function inChunk(linkId: string, seq: string, id: { linkId: string; firstSeq: string; blocks: number }): boolean {
  const at = BigInt(seq);
  return linkId === id.linkId && at >= BigInt(id.firstSeq) && at < BigInt(id.firstSeq) + BigInt(id.blocks);
}

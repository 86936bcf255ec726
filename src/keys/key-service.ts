import type { Barrier } from '../barrier/barrier.js';
import { IntegrityFailures } from '../barrier/barrier.js';
import type { KeyLimits } from '../config/schema.js';
import { auditBody } from '../audit/event.js';
import type { Principals } from '../auth/principals.js';
import { badRequest, KmsError, unavailable } from '../errors.js';
import { checkSharing } from './sharing.js';
import type { LinkSync } from '../peers/link-sync.js';
import type { LinkFigures } from '../pool/link-figures.js';
import type { PoolGate } from '../pool/pool-gate.js';
import type { PolicyBook } from '../policy/policy-book.js';
import { PairRateLimiter } from '../policy/rate-limiter.js';
import type { Coordinator } from '../coord/coordinator.js';
import { InProcessCoordinator } from '../coord/in-process.js';
import type { Topology } from '../peers/topology.js';
import { isConnectionError, withTransaction, type Db } from '../store/db.js';
import { availableBlocks, setAsideChunks } from '../store/pool.js';
import { endKeys } from '../store/keys.js';
import { integrityVerdict, KEK_SUSPECT } from './integrity.js';
import { GroupCommitQueue, type Pending } from './group-commit.js';
import { MasterDeliveryBatcher } from './master-batcher.js';
import { deliverToSlaves, type SlaveRequest } from './slave-delivery.js';
import { checkExtensions, checkKeyIds, checkKeyRequest } from './request-rules.js';
import { planDelivery } from '../peers/routing.js';
import type { EtsiStatus, KeyContainer, KeyRequest, SaeCaller } from './types.js';
import type { FallbackState } from './fallback-state.js';

export interface KeyServiceDeps {
  kmeId: string;
  db: Db;
  barrier: Barrier;
  topology: Topology;
  batcher: MasterDeliveryBatcher;
  /** Liveness and reach of paired links, for status figures. */
  linkSync?: LinkSync;
  /** Ingest figures per link, shown in status_extension. */
  figures?: Map<string, LinkFigures>;
  limits: KeyLimits;
  /** How long a Get key request may take end to end before it gets a 503 and takes nothing. */
  deadlineMs: number;
  /** Get key with key IDs requests that may wait for a transaction (more get a 503 at once). */
  maxQueued: number;
  /** The registry: the status and allowed peers of this KME's SAEs. None: every pair of registered SAEs may share keys. */
  principals?: Principals;
  /** The operators' holds on pools. None: every pool hands keys out. */
  pools?: PoolGate;
  /** Policies per SAE pair: time-to-live, minimum pool level, keys per minute, tags, link failure. None: the KME's defaults. */
  policies?: PolicyBook;
  /** Which links' pairs get fallback keys now, and how many each pair got (status figures). */
  fallback?: FallbackState;
  /** Where keys per minute are counted: the coordinator (Redis for replicas). None: this process counts alone. */
  counters?: Pick<Coordinator, 'take' | 'refund'>;
  /** Hears of the keys handed out, per pair, as they go (the metrics count them; it must be cheap and never throw). */
  delivered?: (operation: 'enc_keys' | 'dec_keys', master: string, slave: string, keys: number) => void;
}

/**
 * The three ETSI 014 operations, framework-free. Every method either returns the full answer or throws a KmsError
 * (400/401/503); any other error means an internal fault and is answered with a 503 by the HTTP layer.
 *
 * Delivery invariants (checked by test/keys/* and test/network/*): a block of material is bound to at most one
 * key_ID, a key_ID is handed to its master once and to each named slave once, the state change and its audit
 * event commit in one transaction, and a key for slaves at other KMEs reaches the master only after every KME on
 * the way holds it. Material is unwrapped *before* commit, so an HSM failure leaves the pool untouched; a failure
 * after commit (lost response) leaves the keys out of the pool for good, and their time-to-live destroys them.
 */
export class KeyService {
  /** Group commit for Get key with key IDs: concurrent requests share one transaction (src/keys/group-commit.ts). */
  private readonly slaves: GroupCommitQueue<SlaveRequest, KeyContainer>;
  /** Keys per minute per SAE pair, where a policy limits them. */
  private readonly rates: PairRateLimiter;

  constructor(private readonly deps: KeyServiceDeps) {
    this.rates = new PairRateLimiter(deps.counters ?? new InProcessCoordinator());
    this.slaves = new GroupCommitQueue({
      maxInFlight: 2, // as for Get key (src/keys/master-batcher.ts): fewer, larger transactions serve more
      maxQueued: deps.maxQueued,
      maxWeight: 1_024,
      weight: (r) => r.keyIds.length,
      deadline: (r) => r.deadline,
      run: (_, batch) => this.fetchForSlaves(batch),
      full: () => unavailable('too many key requests waiting; try again later'),
      timedOut: slaveTimedOut,
    });
  }

  async status(caller: SaeCaller, slave: string): Promise<EtsiStatus> {
    const { limits, topology } = this.deps;
    this.checkPair(caller.saeId, slave);
    const plan = planDelivery(topology, [slave]);
    const slaveKme = topology.kmeOf(slave)!;
    let blocks = await availableBlocks(this.deps.db, plan.material.linkId).catch(databaseDown);
    const held = this.linksOf(plan).filter((id) => this.deps.pools && !this.deps.pools.handsOut(id));
    if (held.length > 0) blocks = 0; // an operator holds a pool the keys would come from
    const hop = plan.hops[0];
    if (hop) {
      const state = this.deps.linkSync?.state(hop.link.linkId);
      // Keys reach a remote slave only while its KME (and every KME on the way) answers.
      if (!state?.up || state.misconfigured) blocks = 0;
      else if (hop.peer !== slaveKme) blocks = Math.min(blocks, state.reach.get(slaveKme) ?? 0);
    }
    let storedKeys = Math.min(Math.floor((blocks * plan.material.blockBits) / limits.key_size), limits.max_key_count);
    const minimum = this.deps.policies?.of(caller.saeId, slave)?.minPoolKeys;
    // A pair that falls back gets keys while the slave's KME answers, whatever the pool holds: say so, so that an
    // encryptor that checks stored_key_count before it asks still asks.
    const fallback = this.fallbackFigures(caller.saeId, slave, plan, { held: held.length > 0, storedKeys });
    const fallbackNow = fallback?.next_key_origin === 'pqc_fallback';
    if (fallbackNow) storedKeys = limits.max_key_count;
    return {
      source_KME_ID: this.deps.kmeId,
      target_KME_ID: slaveKme,
      master_SAE_ID: caller.saeId,
      slave_SAE_ID: slave,
      key_size: limits.key_size,
      // The pool never holds more than max_key_count blocks; the clamp guards clients that check the bound.
      stored_key_count: storedKeys,
      max_key_count: limits.max_key_count,
      max_key_per_request: limits.max_key_per_request,
      max_key_size: limits.max_key_size,
      min_key_size: limits.min_key_size,
      max_SAE_ID_count: limits.max_SAE_ID_count,
      status_extension: {
        ...(hop ? { qkms_route_type: hop.peer === slaveKme ? 'direct' : 'indirect', qkms_next_hop: hop.peer } : {}),
        ...(this.deps.figures?.get(plan.material.linkId) ? { qkms_link: this.deps.figures.get(plan.material.linkId)!.snapshot() } : {}),
        ...(held.length > 0 ? { qkms_pool_held: held.map((id) => ({ link_id: id, state: this.deps.pools!.state(id) })) } : {}),
        ...(fallback ? { qkms_fallback: fallback } : {}),
        ...(minimum !== undefined && (fallbackNow ? 0 : storedKeys) < minimum
          ? {
              qkms_warnings: [
                `the pool holds ${fallbackNow ? 0 : storedKeys} keys, below the minimum of ${minimum} the policy of ${caller.saeId} and ${slave} sets`,
              ],
            }
          : {}),
      },
    };
  }

  async getKeys(caller: SaeCaller, slave: string, req: KeyRequest, abandoned: () => boolean = () => false): Promise<KeyContainer> {
    this.checkPair(caller.saeId, slave);
    const { routeType } = checkExtensions(req);
    const { number, size, additionalSlaves } = checkKeyRequest(req, {
      limits: this.deps.limits,
      master: caller.saeId,
      slave,
      isRegistered: (id) => this.deps.topology.kmeOf(id) !== undefined,
    });
    const slaveSaeIds = [slave, ...additionalSlaves];
    for (const s of additionalSlaves) this.checkSharing(caller.saeId, s);
    const plan = planDelivery(this.deps.topology, slaveSaeIds, { routeType });
    for (const hop of plan.hops) {
      const state = this.deps.linkSync?.state(hop.link.linkId);
      if (state?.misconfigured) throw unavailable(`link ${hop.link.linkId} to ${hop.peer} is misconfigured: ${state.misconfigured}`);
    }
    this.deps.pools?.checkHandOut(this.linksOf(plan));
    const policy = this.deps.policies?.forRequest(caller.saeId, slaveSaeIds);
    const charged = policy ? await this.rates.charge(caller.saeId, policy.pairs, number) : [];
    const delivery = await this.deps.batcher
      .deliver({
        plan,
        masterSaeId: caller.saeId,
        certSha256: caller.certSha256,
        slaveSaeIds,
        number,
        sizeBits: size,
        blocksPerKey: Math.ceil(size / plan.material.blockBits),
        deadline: Date.now() + this.deps.deadlineMs,
        abandoned,
        ...(policy?.keyTtlSeconds !== undefined ? { ttlMs: policy.keyTtlSeconds * 1000 } : {}),
        ...(policy && Object.keys(policy.tags).length ? { tags: policy.tags } : {}),
        ...(policy?.fallback && this.canFallBack(plan) ? { fallback: true } : {}),
      })
      .catch(async (err: unknown) => {
        await this.rates.refundAll(charged, number);
        return databaseDown(err);
      });
    if (delivery.origin === 'pqc_fallback') for (const s of slaveSaeIds) this.deps.fallback?.count(caller.saeId, s, number);
    if (this.deps.delivered) for (const s of slaveSaeIds) this.deps.delivered('enc_keys', caller.saeId, s, delivery.keys.length);
    return { keys: delivery.keys, key_container_extension: { qkms_key_origin: delivery.origin } };
  }

  /**
   * Fallback keys go only where no trusted node stands between (every slave at this KME or at a next hop), and only
   * with the fallback wired in.
   */
  private canFallBack(plan: ReturnType<typeof planDelivery>): boolean {
    return this.deps.fallback !== undefined && plan.hops.every((h) => h.targets.every((t) => this.deps.topology.kmeOf(t) === h.peer));
  }

  /**
   * For a pair whose policy allows the fallback: which origin its next key would have (pqc_fallback when the pool
   * holds too little for one key and the slave's KME answers), since when the link falls back, and the fallback keys
   * this process delivered for it. Undefined for other pairs.
   */
  private fallbackFigures(master: string, slave: string, plan: ReturnType<typeof planDelivery>, pool: { held: boolean; storedKeys: number }) {
    if (!this.deps.fallback || !this.deps.policies?.allowsFallback(master, slave) || !this.canFallBack(plan)) return undefined;
    const hop = plan.hops[0];
    const reachable = !hop || this.deps.linkSync?.state(hop.link.linkId)?.up === true;
    return {
      policy: 'pqc_fallback',
      next_key_origin: pool.held ? 'none' : pool.storedKeys > 0 ? 'qkd' : reachable ? 'pqc_fallback' : 'none',
      link_in_fallback: this.deps.fallback.isActive(plan.material.linkId),
      fallback_keys_delivered: this.deps.fallback.keys(master, slave),
    };
  }

  async getKeysWithIds(caller: SaeCaller, master: string, requestedIds: string[]): Promise<KeyContainer> {
    if (this.deps.topology.kmeOf(master) === undefined) {
      throw badRequest(`master SAE ${master} is not registered at this KME or in its network`);
    }
    this.checkSharing(master, caller.saeId);
    const keyIds = checkKeyIds(requestedIds, this.deps.limits);
    return this.slaves.submit('dec_keys', { caller, master, keyIds, deadline: Date.now() + this.deps.deadlineMs }).catch(databaseDown);
  }

  /** One transaction for a batch of dec_keys requests; settles every request of the batch, never throws. */
  private async fetchForSlaves(batch: Array<Pending<SlaveRequest, KeyContainer>>): Promise<void> {
    const deadline = Math.min(...batch.map((p) => p.request.deadline));
    try {
      const answers = await withTransaction(this.deps.db, async (c) => {
        const tagsOf = (master: string, slave: string) => this.deps.policies?.of(master, slave)?.tags;
        const answers = await deliverToSlaves(c, { barrier: this.deps.barrier, kmeId: this.deps.kmeId, tagsOf }, batch.map((p) => p.request));
        // Past the deadline the client has its 503: roll back rather than mark keys delivered nobody receives.
        if (Date.now() >= deadline && answers.some((a) => !(a instanceof KmsError))) throw slaveTimedOut();
        return answers;
      });
      batch.forEach((p, i) => {
        const a = answers[i]!;
        if (a instanceof KmsError) p.reject(a);
        else {
          this.deps.delivered?.('dec_keys', p.request.master, p.request.caller.saeId, a.keys.length);
          p.resolve(a);
        }
      });
    } catch (err) {
      if (err instanceof IntegrityFailures && batch.length > 1) {
        // Whose keys failed? One by one, each request finds out for itself (and the others are served).
        for (const p of batch) await this.fetchForSlaves([p]);
        return;
      }
      if (err instanceof IntegrityFailures) {
        const r = batch[0]!.request;
        batch[0]!.reject(await this.setAsideKeys(r.caller, r.keyIds, err));
        return;
      }
      for (const p of batch) p.reject(err);
    }
  }

  /**
   * Keys whose stored material failed its integrity check: destroyed as compromised and their chunks set aside
   * (audited), then a 503 — unless the key-encryption key is the suspect (nothing destroyed then).
   */
  private async setAsideKeys(caller: SaeCaller, keyIds: string[], err: IntegrityFailures): Promise<Error> {
    if ((await integrityVerdict(this.deps.db, this.deps.barrier, err)) !== 'material') {
      return unavailable(`${KEK_SUSPECT} (the operator must investigate; nothing was taken)`);
    }
    const bad = new Set(err.ids.map((id) => ('keyId' in id ? id.keyId : undefined)).filter((x) => x !== undefined));
    const chunks = err.ids.flatMap((id) => ('firstSeq' in id ? [id] : []));
    const { rows } = await this.deps.db.query(
      `SELECT DISTINCT q.key_id::text AS id FROM qkd_key q, unnest($1::text[], $2::bigint[], $3::int[]) AS c(link, first, blocks)
        WHERE q.key_id = ANY($4::uuid[]) AND q.link_id = c.link AND q.seqs && int8range(c.first, c.first + c.blocks)`,
      [chunks.map((c) => c.linkId), chunks.map((c) => c.firstSeq), chunks.map((c) => c.blocks), keyIds],
    );
    for (const r of rows as Array<{ id: string }>) bad.add(r.id);
    const ids = keyIds.filter((k) => bad.has(k));
    // The chunks themselves are set aside too: nothing else is handed out of them, and their ciphertext is kept.
    if (chunks.length > 0) {
      await setAsideChunks(this.deps.db, chunks, [
        auditBody({
          operation: 'set_aside',
          outcome: 'failed',
          actor: `sae:${caller.saeId}`,
          actorCert: caller.certSha256,
          detail: { reason: 'integrity check failed', chunks: chunks.map((c) => ({ link_id: c.linkId, first_seq: c.firstSeq, blocks: c.blocks })) },
        }),
      ]).catch(() => undefined);
    }
    await withTransaction(this.deps.db, (c) =>
      endKeys(c, ids, 'DESTROYED', (ended) =>
        auditBody({
          operation: 'set_aside',
          outcome: 'failed',
          actor: `sae:${caller.saeId}`,
          actorCert: caller.certSha256,
          keyIds: ended,
          detail: { reason: 'stored material failed its integrity check; destroyed as compromised' },
        }),
      ),
    ).catch(() => undefined);
    return unavailable(`stored material of key(s) ${ids.join(', ')} failed its integrity check: destroyed as compromised; the operator must investigate`);
  }

  /** The links whose material a delivery plan takes here: the key's own, and each next hop's (one-time pads). */
  private linksOf(plan: ReturnType<typeof planDelivery>): string[] {
    return [...new Set([plan.material.linkId, ...plan.hops.map((h) => h.link.linkId)])];
  }

  private checkPair(master: string, slave: string): void {
    if (slave === master) throw badRequest(`an SAE cannot request keys shared with itself (${slave})`);
    if (this.deps.topology.kmeOf(slave) === undefined) {
      throw badRequest(`slave SAE ${slave} is not registered at this KME or in its network`);
    }
    this.checkSharing(master, slave);
  }

  private checkSharing(master: string, slave: string): void {
    checkSharing(this.deps.principals, master, slave);
  }
}

const slaveTimedOut = () => unavailable('key request timed out waiting for the key store; nothing was taken, try again');

/** Connection-level database failures become a 503 that says so; KmsErrors pass through unchanged. */
function databaseDown(err: unknown): never {
  if (isConnectionError(err)) throw unavailable('key store unavailable, try again later');
  throw err;
}

import type { Barrier } from '../barrier/barrier.js';
import type { KeyLimits } from '../config/schema.js';
import { auditBody } from '../audit/event.js';
import { badRequest, EtsiMessage, unauthorized, unavailable } from '../errors.js';
import type { SaeRegistry } from '../auth/sae-registry.js';
import { isConnectionError, withTransaction, type Db } from '../store/db.js';
import { availableBlocks } from '../store/pool.js';
import { blocksOfKeys, lockSlaveRows, recordSlaveDelivery, type SlaveRow } from '../store/deliveries.js';
import { assemble, MasterDeliveryBatcher } from './master-batcher.js';
import { checkExtensions, checkKeyIds, checkKeyRequest } from './request-rules.js';
import type { EtsiStatus, KeyContainer, KeyRequest, SaeCaller } from './types.js';

export interface KeyServiceDeps {
  kmeId: string;
  db: Db;
  barrier: Barrier;
  registry: SaeRegistry;
  limits: KeyLimits;
  /** Which link's pool serves a master→slave pair. One loopback link for now; KME pairing adds real routing. */
  linkFor: (master: string, slave: string) => { linkId: string; blockBits: number; targetKmeId: string };
}

/**
 * The three ETSI 014 operations, framework-free. Every method either returns the full answer or throws a KmsError
 * (400/401/503); any other error means an internal fault and is answered with a 503 by the HTTP layer.
 *
 * Delivery invariants (checked by test/keys/*): a block of material is bound to at most one key_ID, a key_ID is
 * handed to its master once and to each named slave once, and the state change and its audit event commit in
 * one transaction. Material is unwrapped *before* commit, so an HSM failure leaves the pool untouched; a failure
 * after commit (lost response) leaves the keys out of the pool for good. Get key requests go through the
 * MasterDeliveryBatcher (group commit); Get key with key IDs runs one transaction per request.
 */
export class KeyService {
  private readonly batcher: MasterDeliveryBatcher;

  constructor(private readonly deps: KeyServiceDeps) {
    this.batcher = new MasterDeliveryBatcher({ db: deps.db, barrier: deps.barrier });
  }

  async status(caller: SaeCaller, slave: string): Promise<EtsiStatus> {
    const { limits } = this.deps;
    const route = this.route(caller.saeId, slave);
    const available = await availableBlocks(this.deps.db, route.linkId).catch(databaseDown);
    return {
      source_KME_ID: this.deps.kmeId,
      target_KME_ID: route.targetKmeId,
      master_SAE_ID: caller.saeId,
      slave_SAE_ID: slave,
      key_size: limits.key_size,
      // The pool never holds more than max_key_count blocks; the clamp guards clients that check the bound.
      stored_key_count: Math.min(Math.floor((available * route.blockBits) / limits.key_size), limits.max_key_count),
      max_key_count: limits.max_key_count,
      max_key_per_request: limits.max_key_per_request,
      max_key_size: limits.max_key_size,
      min_key_size: limits.min_key_size,
      max_SAE_ID_count: limits.max_SAE_ID_count,
    };
  }

  async getKeys(caller: SaeCaller, slave: string, req: KeyRequest): Promise<KeyContainer> {
    const route = this.route(caller.saeId, slave);
    checkExtensions(req);
    const { number, size, additionalSlaves } = checkKeyRequest(req, {
      limits: this.deps.limits,
      master: caller.saeId,
      slave,
      isRegistered: (id) => this.deps.registry.has(id),
    });
    const keys = await this.batcher
      .deliver({
        linkId: route.linkId,
        masterSaeId: caller.saeId,
        certSha256: caller.certSha256,
        slaveSaeIds: [slave, ...additionalSlaves],
        number,
        sizeBits: size,
        blocksPerKey: Math.ceil(size / route.blockBits),
      })
      .catch(databaseDown);
    return { keys };
  }

  async getKeysWithIds(caller: SaeCaller, master: string, requestedIds: string[]): Promise<KeyContainer> {
    if (!this.deps.registry.has(master)) throw badRequest(`master SAE ${master} is not registered at this KME`);
    const keyIds = checkKeyIds(requestedIds, this.deps.limits);

    const keys = await withTransaction(this.deps.db, async (c) => {
      const rows = await lockSlaveRows(c, keyIds);
      const destroyKeyIds = checkSlaveMayFetch(rows, keyIds, caller.saeId, master);
      const blocks = await blocksOfKeys(c, keyIds);
      const material = await this.deps.barrier.openAll(
        blocks.map((b) => ({ wrapped: b.wrapped, id: { linkId: b.linkId, seq: b.seq } })),
      );
      const byKey = new Map<string, Buffer[]>();
      blocks.forEach((b, i) => byKey.set(b.keyId, [...(byKey.get(b.keyId) ?? []), material[i]!]));
      const sizeOf = new Map(rows.map((r) => [r.keyId, r.sizeBits]));
      const actor = { actor: `sae:${caller.saeId}`, actorCert: caller.certSha256 };
      const auditBodies = [auditBody({ operation: 'deliver_slave', outcome: 'ok', ...actor, keyIds, detail: { master } })];
      if (destroyKeyIds.length > 0) {
        auditBodies.push(
          auditBody({ operation: 'destroy', outcome: 'ok', ...actor, keyIds: destroyKeyIds, detail: { reason: 'all slaves served' } }),
        );
      }
      await recordSlaveDelivery(c, { slaveSaeId: caller.saeId, keyIds, destroyKeyIds, auditBodies });
      return keyIds.map((keyId) => ({ key_ID: keyId, key: assemble(byKey.get(keyId) ?? [], sizeOf.get(keyId)!) }));
    }).catch(databaseDown);
    return { keys };
  }

  private route(master: string, slave: string) {
    if (slave === master) throw badRequest(`an SAE cannot request keys shared with itself (${slave})`);
    if (!this.deps.registry.has(slave)) throw badRequest(`slave SAE ${slave} is not registered at this KME`);
    return this.deps.linkFor(master, slave);
  }
}

/**
 * The 401/400 rules of Get key with key IDs, decided on the locked slave rows. Returns the keys whose material
 * may be erased after this delivery (no other slave still waits for them).
 */
function checkSlaveMayFetch(rows: SlaveRow[], keyIds: string[], caller: string, master: string): string[] {
  const destroy: string[] = [];
  const notFound: string[] = [];
  for (const keyId of keyIds) {
    const slaves = rows.filter((r) => r.keyId === keyId);
    const mine = slaves.find((r) => r.saeId === caller);
    if (slaves.length > 0 && !mine) {
      // §6.3: only an SAE named as slave or additional slave in the Get key request may fetch the key.
      throw unauthorized(`SAE ${caller} was not named as a slave for one or more of the keys requested`);
    }
    if (!mine || mine.delivered || mine.masterSaeId !== master || mine.keyState !== 'DELIVERED') {
      notFound.push(keyId);
      continue;
    }
    if (slaves.every((r) => r === mine || r.delivered)) destroy.push(keyId);
  }
  if (notFound.length > 0) throw badRequest(EtsiMessage.keysNotFound, notFound.map((key_ID) => ({ key_ID })));
  return destroy;
}

/** Connection-level database failures become a 503 that says so; KmsErrors pass through unchanged. */
function databaseDown(err: unknown): never {
  if (isConnectionError(err)) throw unavailable('key store unavailable, try again later');
  throw err;
}

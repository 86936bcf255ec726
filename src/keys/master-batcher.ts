import { randomUUID } from 'node:crypto';
import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import { unavailable } from '../errors.js';
import { withTransaction, type Db } from '../store/db.js';
import { claimAvailableBlocks, recordMasterDeliveries, type NewKey } from '../store/deliveries.js';

/** One Get key request, checked and routed, waiting for its keys. */
export interface MasterRequest {
  linkId: string;
  masterSaeId: string;
  certSha256: string;
  /** The path's slave first, then the additional slaves. */
  slaveSaeIds: string[];
  number: number;
  sizeBits: number;
  blocksPerKey: number;
}

export interface DeliveredKey {
  key_ID: string;
  key: string;
}

interface Pending {
  request: MasterRequest;
  resolve: (keys: DeliveredKey[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit for Get key. A commit is the expensive part of a delivery (a WAL flush), so requests for the same
 * link that arrive while earlier transactions are in flight share the next transaction: one claim, one write,
 * one commit, one audit event per request. With no contention a request runs alone at once, so this adds no
 * latency; under load it multiplies throughput.
 *
 * Each request is all-or-nothing: it gets all its keys or a 503, never part. Requests are served in arrival order
 * from the blocks a batch could claim; those the pool cannot cover fail with 503 and take nothing. A failure of
 * the transaction (database, HSM) fails every request of that batch, and takes nothing from the pool.
 */
export class MasterDeliveryBatcher {
  private readonly queues = new Map<string, Pending[]>();
  private readonly inFlight = new Map<string, number>();

  constructor(
    private readonly deps: {
      db: Db;
      barrier: Barrier;
      /** Concurrent transactions per link (each holds one pooled connection). */
      maxInFlight?: number;
      /** Upper bound on the blocks one transaction claims, to keep transactions short. */
      maxBlocksPerBatch?: number;
    },
  ) {}

  deliver(request: MasterRequest): Promise<DeliveredKey[]> {
    return new Promise((resolve, reject) => {
      const queue = this.queues.get(request.linkId) ?? [];
      queue.push({ request, resolve, reject });
      this.queues.set(request.linkId, queue);
      this.pump(request.linkId);
    });
  }

  private pump(linkId: string): void {
    const queue = this.queues.get(linkId);
    const maxInFlight = this.deps.maxInFlight ?? 8;
    const maxBlocks = this.deps.maxBlocksPerBatch ?? 512;
    while (queue && queue.length > 0 && (this.inFlight.get(linkId) ?? 0) < maxInFlight) {
      const batch: Pending[] = [];
      let blocks = 0;
      while (queue.length > 0) {
        const need = blocksNeeded(queue[0]!.request);
        if (batch.length > 0 && blocks + need > maxBlocks) break;
        batch.push(queue.shift()!);
        blocks += need;
      }
      this.inFlight.set(linkId, (this.inFlight.get(linkId) ?? 0) + 1);
      void this.run(linkId, batch, blocks).finally(() => {
        this.inFlight.set(linkId, (this.inFlight.get(linkId) ?? 1) - 1);
        this.pump(linkId);
      });
    }
  }

  private async run(linkId: string, batch: Pending[], blocksWanted: number): Promise<void> {
    let outcome: Array<DeliveredKey[] | undefined>;
    try {
      outcome = await withTransaction(this.deps.db, async (c) => {
        const blocks = await claimAvailableBlocks(c, linkId, blocksWanted);
        // Serve in arrival order while the claimed blocks last; a request that does not fit takes nothing.
        let next = 0;
        const plan = batch.map(({ request }) => {
          const need = blocksNeeded(request);
          if (next + need > blocks.length) return undefined;
          next += need;
          return { request, blocks: blocks.slice(next - need, next), keyIds: Array.from({ length: request.number }, () => randomUUID()) };
        });
        const served = plan.filter((p) => p !== undefined);
        if (served.length === 0) return plan.map(() => undefined);
        const taken = served.flatMap((p) => p.blocks);
        const material = await this.deps.barrier.openAll(taken.map((b) => ({ wrapped: b.wrapped, id: { linkId, seq: b.seq } })));
        const newKeys: NewKey[] = served.flatMap((p) =>
          p.keyIds.map((keyId, i) => ({
            keyId,
            masterSaeId: p.request.masterSaeId,
            sizeBits: p.request.sizeBits,
            slaveSaeIds: p.request.slaveSaeIds,
            blockSeqs: p.blocks.slice(i * p.request.blocksPerKey, (i + 1) * p.request.blocksPerKey).map((b) => b.seq),
          })),
        );
        await recordMasterDeliveries(c, linkId, newKeys, served.map((p) => auditOf(linkId, p.request, p.keyIds, p.blocks.map((b) => b.seq))));
        let offset = 0;
        return plan.map((p) => {
          if (!p) return undefined;
          return p.keyIds.map((keyId) => {
            const parts = material.slice(offset, (offset += p.request.blocksPerKey));
            return { key_ID: keyId, key: assemble(parts, p.request.sizeBits) };
          });
        });
      });
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const keys = outcome[i];
      if (keys) p.resolve(keys);
      else {
        const r = p.request;
        p.reject(
          unavailable(
            `not enough key material for ${r.masterSaeId} → ${r.slaveSaeIds[0]}: requested ${r.number} key(s) of ` +
              `${r.sizeBits} bits, try again later or ask for fewer keys`,
          ),
        );
      }
    });
  }
}

const blocksNeeded = (r: MasterRequest) => r.number * r.blocksPerKey;

function auditOf(linkId: string, r: MasterRequest, keyIds: string[], blocks: string[]): string {
  return auditBody({
    operation: 'deliver_master',
    outcome: 'ok',
    actor: `sae:${r.masterSaeId}`,
    actorCert: r.certSha256,
    keyIds,
    detail: { link_id: linkId, slaves: r.slaveSaeIds, size_bits: r.sizeBits, blocks },
  });
}

/** Concatenates a key's blocks and cuts it to exactly `sizeBits` (always a multiple of 8). */
export function assemble(blocks: Buffer[], sizeBits: number): string {
  const key = Buffer.concat(blocks).subarray(0, sizeBits / 8);
  if (key.length * 8 !== sizeBits) throw new Error(`key material short: ${key.length * 8} of ${sizeBits} bits`);
  return key.toString('base64');
}

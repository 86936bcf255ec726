import type { Barrier } from '../barrier/barrier.js';
import { auditBody } from '../audit/event.js';
import type { Logger } from '../log.js';
import type { Material, MaterialAck } from '../schemas/peer.js';
import { DeviceKeysNotReadyError, type DeviceKey, type LinkSource } from '../sources/link-source.js';
import type { Db } from '../store/db.js';
import { insertAnnounced, poolCounts, storedRefs, type SealedChunkRow } from '../store/pool.js';
import { chunkPieces, sealPieces } from './chunking.js';

/**
 * The secondary's side of a paired link: the primary announced which device keys fill which positions; read the
 * same keys from this end's device, store them at exactly those positions (owned by whichever end the primary
 * assigned), release them at the device, and say which refs are stored and which the device does not have yet.
 *
 * Idempotent: positions already stored are left alone (a retried announcement after a lost reply). The material
 * itself never crosses between the KMEs; only refs and positions do.
 */
export class SecondaryIngest {
  constructor(
    private readonly deps: {
      db: Db;
      barrier: Barrier;
      source: LinkSource;
      kmeId: string;
      peerKmeId: string;
      linkId: string;
      blockBits: number;
      maxBlocks: number;
      log: Logger;
      /** Told how many blocks each announcement stored (link figures). */
      onStored?: (blocks: number) => void;
    },
  ) {}

  async store(material: Material): Promise<MaterialAck> {
    const { db, linkId, source } = this.deps;
    const keys = material.keys;
    for (const k of keys) {
      if (k.owner_split > k.blocks) throw new Error(`ref ${k.ref}: owner_split ${k.owner_split} exceeds its ${k.blocks} blocks`);
    }
    const already = await storedRefs(db, linkId, keys.map((k) => k.ref));
    const wanted = keys.filter((k) => !already.has(k.ref));
    const notReady = new Set<string>();
    let fetched: DeviceKey[] = [];
    let pending = wanted;
    // All or nothing per fetch: drop the refs the device does not have and ask again for the rest.
    while (pending.length > 0) {
      try {
        const material = await source.fetch(pending.map((k) => ({ ref: k.ref, blocks: k.blocks })));
        fetched = pending.map((k, i) => ({ ref: k.ref, blocks: k.blocks, material: material[i]! }));
        break;
      } catch (err) {
        if (!(err instanceof DeviceKeysNotReadyError) || err.refs.length === 0) throw err;
        for (const r of err.refs) notReady.add(r);
        pending = pending.filter((k) => !notReady.has(k.ref));
      }
    }
    if (fetched.length > 0) {
      const byRef = new Map(wanted.map((k) => [k.ref, k]));
      const blockBytes = this.deps.blockBits / 8;
      const sealing: Array<Promise<SealedChunkRow>> = [];
      for (const f of fetched) {
        const k = byRef.get(f.ref)!;
        if (f.material.length !== k.blocks * blockBytes) throw new Error(`device key ${f.ref} is not ${k.blocks} blocks long`);
        sealing.push(...sealPieces(this.deps.barrier, linkId, f.material, blockBytes, chunkPieces(k.first_seq, k.blocks, k.owner_split), false));
      }
      const rows = await Promise.all(sealing);
      const audit = auditBody({
        operation: 'ingest',
        outcome: 'ok',
        actor: `kme:${this.deps.peerKmeId}`,
        detail: {
          link_id: linkId,
          announced_by: this.deps.peerKmeId,
          blocks: rows.reduce((n, r) => n + r.blocks, 0),
          owned: rows.reduce((n, r) => n + (r.owned ? r.blocks : 0), 0),
          device_keys: fetched.length,
          ranges: fetched.map((f) => ({ first: byRef.get(f.ref)!.first_seq, count: f.blocks })).slice(0, 64),
        },
      });
      const refs = fetched.map((f) => {
        const k = byRef.get(f.ref)!;
        return { ref: k.ref, firstSeq: k.first_seq, blocks: k.blocks, ownerSplit: k.owner_split };
      });
      this.deps.onStored?.(await insertAnnounced(db, linkId, refs, rows, [audit]));
      await source.release(fetched.map((f) => f.ref));
      for (const f of fetched) f.material.fill(0);
    }
    const counts = await poolCounts(db, linkId);
    return {
      stored: keys.filter((k) => !notReady.has(k.ref)).map((k) => k.ref),
      not_ready: [...notReady],
      room: Math.max(0, this.deps.maxBlocks - counts.available),
    };
  }
}

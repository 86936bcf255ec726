import type { Barrier } from '../barrier/barrier.js';
import type { SealedChunkRow } from '../store/pool.js';

/**
 * How a device key's material is cut into chunks (migrations/0003_chunks.sql): the primary's positions of the key
 * [first, first + ownerSplit) and the secondary's [first + ownerSplit, first + blocks), each cut into chunks of at
 * most CHUNK_BLOCKS. A chunk never spans device keys, so confirming or giving up a device key moves whole chunks.
 *
 * Why 256 blocks (8 KiB of 256-bit blocks): one HSM call per chunk keeps ingest at 500,000 blocks/s within a few
 * thousand HSM calls a second, while a delivery that reads one chunk to hand out one key reads 8 KiB, not more.
 */
export const CHUNK_BLOCKS = 256;

export interface ChunkPiece {
  firstSeq: string;
  /** Offset of the piece in the device key's material, in blocks. */
  offset: number;
  blocks: number;
  /** Whether the link's primary owns these positions. */
  primary: boolean;
}

export function chunkPieces(firstSeq: string, blocks: number, ownerSplit: number): ChunkPiece[] {
  const first = BigInt(firstSeq);
  const out: ChunkPiece[] = [];
  const cut = (from: number, to: number, primary: boolean) => {
    for (let o = from; o < to; o += CHUNK_BLOCKS) {
      out.push({ firstSeq: String(first + BigInt(o)), offset: o, blocks: Math.min(CHUNK_BLOCKS, to - o), primary });
    }
  };
  cut(0, ownerSplit, true);
  cut(ownerSplit, blocks, false);
  return out;
}

/**
 * Seals a device key's chunks, all at once (the HSM batches concurrent calls; one by one it cannot). `owned` says,
 * for this end, whether a piece owned by the primary is its own.
 */
export function sealPieces(
  barrier: Barrier,
  linkId: string,
  material: Buffer,
  blockBytes: number,
  pieces: ChunkPiece[],
  primaryIsMe: boolean,
): Array<Promise<SealedChunkRow>> {
  return pieces.map((p) =>
    barrier
      .sealChunk(material.subarray(p.offset * blockBytes, (p.offset + p.blocks) * blockBytes), { linkId, firstSeq: p.firstSeq, blocks: p.blocks })
      .then((s) => ({ firstSeq: p.firstSeq, blocks: p.blocks, sealed: s.wrapped, kekVersion: s.kekVersion, owned: p.primary === primaryIsMe })),
  );
}

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { IntegrityError, type KeyWrapper } from '../hsm/key-wrapper.js';
import { OpenedChunks } from './material.js';

/**
 * The barrier: the only module that turns key material into what storage may hold, and back (DESIGN §3.1).
 *
 * Two envelopes (all integers big-endian):
 * - a relayed key's own material (format 1), sealed by the HSM directly:
 *     0  1 byte format (1) · 1  4 bytes KEK version · 5  12 bytes IV · 17  ciphertext ‖ 16-byte tag
 * - a chunk of a link's material (format 2), sealed under a fresh data key that the HSM wraps (envelope encryption:
 *   one HSM call per chunk of up to 4,096 blocks, not one per block):
 *     0  1 byte format (2) · 1  4 bytes KEK version · 5  12 bytes IV of the wrapped data key ·
 *     17  48 bytes wrapped data key ‖ tag · 65  12 bytes IV of the data · 77  ciphertext ‖ 16-byte tag
 * The associated data binds the format, the KEK version and the identity (a key_ID; or the link, first position and
 * length of a chunk) to both layers, so a ciphertext or a wrapped data key copied to another row, another link or
 * another KEK version fails to open.
 */
const FORMAT_V1 = 1;
const FORMAT_CHUNK = 2;
const HEADER_BYTES = 1 + 4 + 12;
const DEK_BYTES = 32;
const CHUNK_HEADER_BYTES = 1 + 4 + 12 + DEK_BYTES + 16 + 12;

/**
 * What a ciphertext is bound to: a chunk of a link (the link and the positions of its key stream it holds), or a
 * key that arrived by relay and so belongs to no position here (its key_ID).
 */
export type BlockIdentity = ChunkIdentity | { keyId: string };

export interface ChunkIdentity {
  linkId: string;
  /** First position, a decimal string: Postgres bigints arrive as strings. */
  firstSeq: string;
  blocks: number;
}

export interface SealedBlock {
  wrapped: Buffer;
  kekVersion: number;
}

export class Barrier {
  constructor(private readonly wrapper: KeyWrapper) {}

  get description(): string {
    return this.wrapper.description;
  }

  /** Seals a relayed key's own material (format 1). */
  async seal(material: Uint8Array, id: { keyId: string }): Promise<SealedBlock> {
    const kekVersion = this.wrapper.currentVersion();
    const sealed = await this.wrapper.encrypt(material, associatedData(kekVersion, id));
    const header = Buffer.alloc(5);
    header.writeUInt8(FORMAT_V1, 0);
    header.writeUInt32BE(sealed.kekVersion, 1);
    return { wrapped: Buffer.concat([header, sealed.iv, sealed.ciphertext]), kekVersion: sealed.kekVersion };
  }

  /**
   * Seals a chunk: `material` is its blocks, in position order. One HSM call (the data key's wrap); the data is
   * encrypted here with AES-256-GCM. The data key is wiped before this returns.
   */
  async sealChunk(material: Uint8Array, id: ChunkIdentity): Promise<SealedBlock> {
    const kekVersion = this.wrapper.currentVersion();
    const aad = associatedData(kekVersion, id);
    const dek = randomBytes(DEK_BYTES);
    try {
      const wrappedDek = this.wrapper.encrypt(dek, aad);
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', dek, iv).setAAD(aad);
      const data = Buffer.concat([cipher.update(material), cipher.final(), cipher.getAuthTag()]);
      const sealedDek = await wrappedDek;
      const header = Buffer.alloc(5);
      header.writeUInt8(FORMAT_CHUNK, 0);
      header.writeUInt32BE(sealedDek.kekVersion, 1);
      return { wrapped: Buffer.concat([header, sealedDek.iv, sealedDek.ciphertext, iv, data]), kekVersion: sealedDek.kekVersion };
    } finally {
      dek.fill(0);
    }
  }

  /** Throws IntegrityError for a malformed or unauthentic envelope, HsmUnavailableError when the HSM is away. */
  async open(wrapped: Buffer, id: BlockIdentity): Promise<Buffer> {
    if ('firstSeq' in id) return this.openChunk(wrapped, id);
    if (wrapped.length < HEADER_BYTES + 16 || wrapped.readUInt8(0) !== FORMAT_V1) {
      throw new IntegrityError(`${describe(id)}: unknown envelope format`);
    }
    const kekVersion = wrapped.readUInt32BE(1);
    const sealed = { kekVersion, iv: wrapped.subarray(5, HEADER_BYTES), ciphertext: wrapped.subarray(HEADER_BYTES) };
    return this.wrapper.decrypt(sealed, associatedData(kekVersion, id));
  }

  private async openChunk(wrapped: Buffer, id: ChunkIdentity): Promise<Buffer> {
    if (wrapped.length < CHUNK_HEADER_BYTES + 16 || wrapped.readUInt8(0) !== FORMAT_CHUNK) {
      throw new IntegrityError(`${describe(id)}: unknown envelope format`);
    }
    const kekVersion = wrapped.readUInt32BE(1);
    const aad = associatedData(kekVersion, id);
    const dekEnd = HEADER_BYTES + DEK_BYTES + 16;
    const dek = await this.wrapper.decrypt({ kekVersion, iv: wrapped.subarray(5, HEADER_BYTES), ciphertext: wrapped.subarray(HEADER_BYTES, dekEnd) }, aad);
    try {
      const iv = wrapped.subarray(dekEnd, dekEnd + 12);
      const data = wrapped.subarray(dekEnd + 12, wrapped.length - 16);
      const decipher = createDecipheriv('aes-256-gcm', dek, iv).setAAD(aad).setAuthTag(wrapped.subarray(wrapped.length - 16));
      const plain = decipher.update(data);
      try {
        decipher.final();
      } catch {
        plain.fill(0);
        throw new IntegrityError(`${describe(id)}: data failed its integrity check`);
      }
      return plain;
    } finally {
      dek.fill(0);
    }
  }

  /**
   * Opens many; all or nothing. When some fail their integrity check (and nothing worse happened), throws
   * `IntegrityFailures` naming exactly those, so the caller can set them aside and carry on with the rest.
   * Any other failure (the HSM is away) is thrown as it is. Plaintext already opened is wiped before throwing.
   */
  async openAll(blocks: ReadonlyArray<{ wrapped: Buffer; id: BlockIdentity }>): Promise<Buffer[]> {
    const results = await Promise.allSettled(blocks.map((b) => this.open(b.wrapped, b.id)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length === 0) return results.map((r) => (r as PromiseFulfilledResult<Buffer>).value);
    for (const r of results) if (r.status === 'fulfilled') r.value.fill(0);
    const worse = failed.find((r) => !(r.reason instanceof IntegrityError));
    if (worse) throw worse.reason;
    throw new IntegrityFailures(blocks.filter((_, i) => results[i]!.status === 'rejected').map((b) => b.id), blocks.length);
  }

  /** Opens chunks (all or nothing, as `openAll`) into one addressable set of plaintext the caller wipes. */
  async openChunks(chunks: ReadonlyArray<{ sealed: Buffer; id: ChunkIdentity }>): Promise<OpenedChunks> {
    const plain = await this.openAll(chunks.map((c) => ({ wrapped: c.sealed, id: c.id })));
    const opened = new OpenedChunks();
    chunks.forEach((c, i) => opened.add(c.id, plain[i]!));
    return opened;
  }
}

/** Some ciphertexts of a batch failed authentication: these, and only these. */
export class IntegrityFailures extends IntegrityError {
  override name = 'IntegrityFailures';
  constructor(
    readonly ids: BlockIdentity[],
    /** How many were opened in all: when every one failed, the key may be wrong rather than the material. */
    readonly total: number,
  ) {
    super(`${ids.length} stored ciphertext(s) failed their integrity check: ${ids.slice(0, 5).map(describe).join(', ')}`);
  }
}

function associatedData(kekVersion: number, id: BlockIdentity): Buffer {
  if ('keyId' in id) return Buffer.from(`qkd-kms/key/v${FORMAT_V1}\0kek=${kekVersion}\0key=${id.keyId}`, 'utf8');
  return Buffer.from(
    `qkd-kms/chunk/v${FORMAT_CHUNK}\0kek=${kekVersion}\0link=${id.linkId}\0first=${id.firstSeq}\0blocks=${id.blocks}`,
    'utf8',
  );
}

/** For error messages: which ciphertext (never its content). */
export function describe(id: BlockIdentity): string {
  return 'keyId' in id ? `relayed key ${id.keyId}` : `chunk ${id.linkId}/${id.firstSeq}+${id.blocks}`;
}

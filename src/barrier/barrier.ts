import { IntegrityError, type KeyWrapper } from '../hsm/key-wrapper.js';

/**
 * The barrier: the only module that turns key material into what storage may hold, and back (DESIGN §3.1).
 *
 * Stored envelope (all integers big-endian):
 *   0      1 byte   format version (1)
 *   1      4 bytes  KEK version
 *   5     12 bytes  AES-GCM IV
 *   17     …        ciphertext ‖ 16-byte tag
 * The associated data binds the envelope header and the block's identity (link, position in its key stream),
 * so a ciphertext copied to another row, another link or another KEK version fails to open.
 */
const FORMAT_V1 = 1;
const HEADER_BYTES = 1 + 4 + 12;

/**
 * What a ciphertext is bound to: a block of a link (the link and its position in that link's key stream), or a
 * key that arrived by relay and so belongs to no position here (its key_ID).
 */
export type BlockIdentity =
  | {
      linkId: string;
      /** Decimal string: Postgres bigints arrive as strings and are only ever compared, never computed on here. */
      seq: string;
    }
  | { keyId: string };

export interface SealedBlock {
  wrapped: Buffer;
  kekVersion: number;
}

export class Barrier {
  constructor(private readonly wrapper: KeyWrapper) {}

  get description(): string {
    return this.wrapper.description;
  }

  async seal(material: Uint8Array, id: BlockIdentity): Promise<SealedBlock> {
    const kekVersion = this.wrapper.currentVersion();
    const sealed = await this.wrapper.encrypt(material, associatedData(kekVersion, id));
    const header = Buffer.alloc(5);
    header.writeUInt8(FORMAT_V1, 0);
    header.writeUInt32BE(sealed.kekVersion, 1);
    return { wrapped: Buffer.concat([header, sealed.iv, sealed.ciphertext]), kekVersion: sealed.kekVersion };
  }

  /** Throws IntegrityError for a malformed or unauthentic envelope, HsmUnavailableError when the HSM is away. */
  async open(wrapped: Buffer, id: BlockIdentity): Promise<Buffer> {
    if (wrapped.length < HEADER_BYTES + 16 || wrapped.readUInt8(0) !== FORMAT_V1) {
      throw new IntegrityError(`${describe(id)}: unknown envelope format`);
    }
    const kekVersion = wrapped.readUInt32BE(1);
    const sealed = { kekVersion, iv: wrapped.subarray(5, HEADER_BYTES), ciphertext: wrapped.subarray(HEADER_BYTES) };
    return this.wrapper.decrypt(sealed, associatedData(kekVersion, id));
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
  return Buffer.from(`qkd-kms/block/v${FORMAT_V1}\0kek=${kekVersion}\0link=${id.linkId}\0seq=${id.seq}`, 'utf8');
}

/** For error messages: which ciphertext (never its content). */
export function describe(id: BlockIdentity): string {
  return 'keyId' in id ? `relayed key ${id.keyId}` : `block ${id.linkId}/${id.seq}`;
}

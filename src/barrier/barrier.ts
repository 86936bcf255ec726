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

/** Where a block of material sits: the link it came from and its position in that link's key stream. */
export interface BlockIdentity {
  linkId: string;
  /** Decimal string: Postgres bigints arrive as strings and are only ever compared, never computed on here. */
  seq: string;
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
      throw new IntegrityError(`block ${id.linkId}/${id.seq}: unknown envelope format`);
    }
    const kekVersion = wrapped.readUInt32BE(1);
    const sealed = { kekVersion, iv: wrapped.subarray(5, HEADER_BYTES), ciphertext: wrapped.subarray(HEADER_BYTES) };
    return this.wrapper.decrypt(sealed, associatedData(kekVersion, id));
  }

  /** Opens many blocks; all or nothing. */
  openAll(blocks: ReadonlyArray<{ wrapped: Buffer; id: BlockIdentity }>): Promise<Buffer[]> {
    return Promise.all(blocks.map((b) => this.open(b.wrapped, b.id)));
  }
}

function associatedData(kekVersion: number, id: BlockIdentity): Buffer {
  return Buffer.from(`qkd-kms/block/v${FORMAT_V1}\0kek=${kekVersion}\0link=${id.linkId}\0seq=${id.seq}`, 'utf8');
}

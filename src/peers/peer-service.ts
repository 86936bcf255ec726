import type { Static } from 'typebox';
import { badRequest, unauthorized } from '../errors.js';
import type { Logger } from '../log.js';
import type { SecondaryIngest } from '../pool/secondary-ingest.js';
import type { CosignAnswer, CosignRequest, ExtKeysAck, ExtKeysBatch, KemKey, Material, MaterialAck, Sync, VoidSchema } from '../schemas/peer.js';
import { KEM_NAME, kemReady, type OwnKemKey } from './pqc-envelope.js';
import type { Witness } from '../audit/witness.js';
import type { Db } from '../store/db.js';
import type { Forwarder } from './forwarder.js';
import type { LinkSync } from './link-sync.js';
import type { ExtKeysReceiver } from './receiver.js';
import type { LinkInfo, Topology } from './topology.js';
import { receiveVoid } from './void-receiver.js';

/**
 * The KME-to-KME operations, framework-free (the routes in src/routes/peer/ only adapt them to HTTP). `from` is the
 * peer KME the caller's certificate proved; every operation on a link checks that the link is one between this KME
 * and `from`, so a peer can only ever touch material it shares with this KME.
 */
export class PeerService {
  constructor(
    private readonly deps: {
      db: Db;
      topology: Topology;
      receiver: ExtKeysReceiver;
      forwarder: Forwarder;
      secondaries: Map<string, SecondaryIngest>;
      linkSync: LinkSync;
      /** This KME as a witness of its peers' custody logs. */
      witness: Witness;
      /** This KME's KEM key, which peers seal fallback keys to. */
      kem: OwnKemKey;
      log: Logger;
    },
  ) {}

  /** Witnesses the caller's custody checkpoint (src/audit/witness.ts). */
  cosign(from: string, body: CosignRequest): Promise<CosignAnswer> {
    return this.deps.witness.cosign(from, body);
  }

  /** This KME's public KEM key (src/peers/pqc-envelope.ts), for peers that send it fallback keys. */
  async kemKey(): Promise<KemKey> {
    await kemReady();
    const { id, publicKey } = this.deps.kem.public;
    return { kem: KEM_NAME, kem_key_id: id, public_key: Buffer.from(publicKey).toString('base64') };
  }

  extKeys(from: string, body: ExtKeysBatch): Promise<ExtKeysAck> {
    return this.deps.receiver.receive(from, body);
  }

  async voidKeys(from: string, body: Static<typeof VoidSchema>): Promise<{ voided: number }> {
    try {
      return await receiveVoid(this.deps, from, body);
    } catch (err) {
      if (err instanceof Error && /is not a link between/.test(err.message)) throw badRequest(err.message);
      throw err;
    }
  }

  async material(from: string, linkId: string, body: Material): Promise<MaterialAck> {
    const link = this.linkWith(from, linkId);
    const secondary = this.deps.secondaries.get(link.linkId);
    if (!secondary) throw badRequest(`${this.deps.topology.kmeId} is not the secondary end of link ${linkId}: only the primary announces material`);
    return secondary.store(body);
  }

  async sync(from: string, linkId: string, body: Sync): Promise<Sync> {
    const link = this.linkWith(from, linkId);
    this.deps.linkSync.seen(link.linkId);
    await this.deps.linkSync.apply(link, body);
    return this.deps.linkSync.message(link);
  }

  private linkWith(from: string, linkId: string): LinkInfo {
    const link = this.deps.topology.link(linkId);
    if (!link) throw badRequest(`no link ${linkId} at ${this.deps.topology.kmeId}`);
    if (link.peerKmeId !== from) throw unauthorized(`link ${linkId} is not a link between ${from} and ${this.deps.topology.kmeId}`);
    return link;
  }
}

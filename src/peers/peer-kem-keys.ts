import type { KemKey } from '../schemas/peer.js';
import type { PeerClient } from './peer-client.js';
import { KEM_PUBLIC_KEY_BYTES, kemKeyId, type KemPublicKey } from './pqc-envelope.js';

/**
 * The public KEM keys of the peer KMEs, for sealing fallback keys to them. Fetched afresh for every batch of fallback
 * keys (one round trip: fallback is the degraded mode, and a peer's key changes at each of its restarts). The key
 * comes over the mutually authenticated KME-to-KME channel, from the pinned peer: authentication need only hold at
 * the time, while the encapsulation protects the keys against a recording opened later.
 */
export class PeerKemKeys {
  constructor(private readonly clients: Map<string, PeerClient>) {}

  /** Throws (a PeerError) when the peer cannot be asked, or with a clear message when its answer is not a key. */
  async of(peer: string, timeoutMs: number): Promise<KemPublicKey> {
    const client = this.clients.get(peer);
    if (!client) throw new Error(`no client for peer KME ${peer}`);
    const answer = await client.get<KemKey>('/peer/v1/kem-key', timeoutMs);
    const publicKey = Buffer.from(String(answer?.public_key ?? ''), 'base64');
    if (answer?.kem !== 'ML-KEM-768+X25519' || publicKey.length !== KEM_PUBLIC_KEY_BYTES || kemKeyId(publicKey) !== answer.kem_key_id) {
      throw new Error(`${peer} answered no usable ML-KEM-768+X25519 key`);
    }
    return { id: answer.kem_key_id, publicKey };
  }
}

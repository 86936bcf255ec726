import type { Logger } from '../log.js';
import type { ExtKeys, ExtKeysAck, Range } from '../schemas/peer.js';
import type { InFlight } from './in-flight.js';
import { PeerRefusedError, PeerTimeoutError, PeerUnreachableError, type PeerClient } from './peer-client.js';

/** One request's keys for one next hop. */
export interface Outgoing {
  peer: string;
  message: ExtKeys;
  /** Owned positions this message spends as one-time pads (held in flight until the peer answers). */
  padSeqs: string[];
  padLinkId: string;
}

/**
 * - `relayed`: the peer (and every KME beyond it) holds the keys.
 * - `failed`: the peer said it kept nothing.
 * - `ambiguous`: the peer may or may not hold them (no answer in time): void them.
 * - `unsent`: the peer was unreachable: it has nothing, but its copies of the material sent are spent.
 */
export type Outcome = 'relayed' | 'failed' | 'ambiguous' | 'unsent';

/**
 * Sends key reservations and relays to next hops: one round trip per peer for a whole batch of requests (the
 * ETSI GS QKD 020 shapes, batched), all peers at once, each bounded by the caller's deadline. Voids are sent in the
 * background with a few retries; what they cannot reach the peer's own expiry and ownership watermark clean up.
 */
export class Forwarder {
  constructor(
    private readonly deps: {
      kmeId: string;
      clients: Map<string, PeerClient>;
      inFlight: InFlight;
      peerTimeoutMs: number;
      log: Logger;
    },
  ) {}

  /** Sends every outgoing message; resolves (never rejects) with one outcome per message, in order. */
  async send(outgoing: Outgoing[], deadline: number): Promise<Array<{ outcome: Outcome; message?: string }>> {
    const results: Array<{ outcome: Outcome; message?: string }> = outgoing.map(() => ({ outcome: 'unsent' }));
    const byPeer = new Map<string, number[]>();
    outgoing.forEach((o, i) => byPeer.set(o.peer, [...(byPeer.get(o.peer) ?? []), i]));
    await Promise.all(
      [...byPeer].map(async ([peer, indexes]) => {
        const client = this.deps.clients.get(peer);
        if (!client) {
          for (const i of indexes) results[i] = { outcome: 'unsent', message: `no client for ${peer}` };
          return;
        }
        const releases = indexes.map((i) => this.deps.inFlight.hold(outgoing[i]!.padLinkId, outgoing[i]!.padSeqs));
        const timeoutMs = Math.max(1, Math.min(this.deps.peerTimeoutMs, deadline - Date.now()));
        try {
          const ack = await client.post<ExtKeysAck>(
            '/kmapi/v1/ext_keys',
            { requests: indexes.map((i) => outgoing[i]!.message), qkms_deadline_ms: timeoutMs },
            timeoutMs,
          );
          indexes.forEach((i, n) => {
            const a = ack.acks?.[n];
            results[i] = a?.status === 'relayed' ? { outcome: 'relayed' } : { outcome: 'failed', message: a?.message ?? 'no ack' };
          });
        } catch (err) {
          const outcome: Outcome =
            err instanceof PeerUnreachableError ? 'unsent' : err instanceof PeerRefusedError ? 'failed' : 'ambiguous';
          if (!(err instanceof PeerTimeoutError || err instanceof PeerUnreachableError || err instanceof PeerRefusedError)) {
            this.deps.log.error({ err: { message: (err as Error).message }, peer }, 'unexpected error sending keys to a peer');
          }
          for (const i of indexes) results[i] = { outcome, message: (err as Error).message };
        } finally {
          releases.forEach((r) => r());
        }
      }),
    );
    return results;
  }

  /**
   * Sends the messages of several requests at once (each request: its messages to every next hop) and says, per
   * request, why it failed, or undefined when every next hop relayed it.
   */
  async sendGrouped(groups: Outgoing[][], deadline: number): Promise<Array<string | undefined>> {
    const outcomes = await this.send(groups.flat(), deadline);
    let o = 0;
    return groups.map((g) => {
      const bad = outcomes.slice(o, (o += g.length)).find((m) => m.outcome !== 'relayed');
      return bad ? `${bad.outcome}: ${bad.message ?? ''}` : undefined;
    });
  }

  /**
   * Tells a peer to destroy keys and its copies of material this KME spent (best effort, retried a few times in
   * the background). Never throws.
   */
  voidLater(peer: string, v: { keyIds: string[]; linkId: string; ranges: Range[]; reason: string }): void {
    const client = this.deps.clients.get(peer);
    if (!client) return;
    const body = { key_ids: v.keyIds, qkms_reason: v.reason, qkms_link_id: v.linkId, qkms_ranges: v.ranges };
    void (async () => {
      for (let attempt = 0; attempt < 4; attempt++) {
        try {
          await client.post('/kmapi/v1/ext_keys/void', body);
          return;
        } catch (err) {
          if (err instanceof PeerRefusedError && err.status < 500) break;
          await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        }
      }
      this.deps.log.warn(
        { peer, keys: v.keyIds.length, reason: v.reason },
        'could not void keys at a peer; its expiry and the link ownership watermark will destroy them',
      );
    })();
  }
}

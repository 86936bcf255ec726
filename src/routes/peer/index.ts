import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { TLSSocket } from 'node:tls';
import { peerOf } from '../../auth/client-certificate.js';
import type { Principals } from '../../auth/principals.js';
import { unauthorized } from '../../errors.js';
import type { PeerService } from '../../peers/peer-service.js';
import {
  CosignAnswerSchema,
  CosignRequestSchema,
  ExtKeysAckSchema,
  ExtKeysBatchSchema,
  KemKeySchema,
  LinkPathSchema,
  MaterialAckSchema,
  MaterialSchema,
  SyncSchema,
  VoidAckSchema,
  VoidSchema,
} from '../../schemas/peer.js';
import { ErrorResponses } from '../../schemas/etsi014.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The peer KME proven by the client certificate; set by the peer plugin's onRequest hook. */
    peerKme: string;
  }
}

export interface PeerRouteOptions {
  peers: PeerService;
  principals: Principals;
}

const TAG = 'KME to KME';

/**
 * The KME-to-KME API (docs/network.md): ETSI GS QKD 020 shaped key relay under /kmapi/v1, and link upkeep under
 * /peer/v1. Only a configured peer KME's certificate gets in; an SAE's certificate gets a 401 before any handler.
 */
export const peerRoutes: FastifyPluginAsyncTypebox<PeerRouteOptions> = async (app, { peers, principals }) => {
  app.decorateRequest('peerKme', '');
  app.addHook('onRequest', async (request) => {
    const caller = peerOf(request.raw.socket as TLSSocket, principals);
    if (!caller.ok) throw unauthorized(caller.reason);
    request.peerKme = caller.kmeId;
  });
  // A batch of reservations for many concurrent requests is larger than any SAE request (the app-wide limit).
  const common = { tags: [TAG] };
  const bodyLimit = 16 * 1024 * 1024;
  app.post(
    '/kmapi/v1/ext_keys',
    {
      bodyLimit,
      schema: {
        ...common,
        summary: 'Reserve or relay keys (ETSI GS QKD 020 ext_keys, batched)',
        description:
          'Reserves keys for slaves at this KME and passes them on towards slaves beyond it. Acks `relayed` only ' +
          'when every KME on the way holds the keys; otherwise nothing is kept for that request.',
        body: ExtKeysBatchSchema,
        response: { 200: ExtKeysAckSchema, ...ErrorResponses },
      },
    },
    (request) => peers.extKeys(request.peerKme, request.body),
  );
  app.get(
    '/peer/v1/kem-key',
    {
      schema: {
        ...common,
        summary: "This KME's public ML-KEM-768+X25519 key",
        description:
          'Peers seal fallback keys to it (ext_keys with qkms_pqc) when a pair\'s QKD pool cannot serve and its policy allows ' +
          'the fallback. Made at each start of the KME and held in its memory only.',
        response: { 200: KemKeySchema, ...ErrorResponses },
      },
    },
    () => peers.kemKey(),
  );
  app.post(
    '/kmapi/v1/ext_keys/void',
    {
      schema: {
        ...common,
        summary: 'Void keys (ETSI GS QKD 020 ext_keys/void)',
        description: 'Destroys the keys here and at every KME they were passed on to, and copies of material the sender spent.',
        body: VoidSchema,
        response: { 200: VoidAckSchema, ...ErrorResponses },
      },
    },
    (request) => peers.voidKeys(request.peerKme, request.body),
  );
  app.post(
    '/peer/v1/links/:link_id/material',
    {
      bodyLimit,
      schema: {
        ...common,
        summary: 'Announce material (primary to secondary)',
        description: "Which device keys fill which positions of the link's key stream, and which end owns each position.",
        params: LinkPathSchema,
        body: MaterialSchema,
        response: { 200: MaterialAckSchema, ...ErrorResponses },
      },
    },
    (request) => peers.material(request.peerKme, request.params.link_id, request.body),
  );
  app.post(
    '/peer/v1/links/:link_id/sync',
    {
      schema: {
        ...common,
        summary: 'Link upkeep (both ways)',
        description: 'Link parameters, room, ownership watermark and reach; the answer is the same message from this end.',
        params: LinkPathSchema,
        body: SyncSchema,
        response: { 200: SyncSchema, ...ErrorResponses },
      },
    },
    (request) => peers.sync(request.peerKme, request.params.link_id, request.body),
  );
  app.post(
    '/peer/v1/custody/cosign',
    {
      schema: {
        ...common,
        summary: "Witness the caller's custody checkpoint (cosign it if it extends the last one cosigned)",
        description:
          'The witness pins the caller\'s verifier keys on first contact, checks the checkpoint against them and the ' +
          'consistency proof from the size it holds, records the cosigning in its own custody log and answers its ' +
          'signature lines; with another from_size than it holds, it answers held_size instead. A checkpoint that does ' +
          'not extend the one cosigned before is refused (400): a fork.',
        body: CosignRequestSchema,
        response: { 200: CosignAnswerSchema, ...ErrorResponses },
      },
    },
    (request) => peers.cosign(request.peerKme, request.body),
  );
};

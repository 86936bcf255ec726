import { randomBytes } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import type { Principals } from '../auth/principals.js';
import { badRequest, EtsiMessage, KmsError, unauthorized } from '../errors.js';
import type { KeyService } from '../keys/key-service.js';
import type { SaeCaller } from '../keys/types.js';
import { etsiKeyIdOf, skipKeyIdOf } from './key-ids.js';
import { credentialOf, type SkipRouter, type SkipRouters } from './routers.js';
import {
  CapabilitiesSchema,
  EntropyQuerySchema,
  EntropySchema,
  KeyByIdParamsSchema,
  KeyByIdQuerySchema,
  KeyQuerySchema,
  KeySchema,
  SkipErrorResponses,
  SkipErrorSchema,
} from './schemas.js';

export interface SkipRouteOptions {
  keys: KeyService;
  routers: SkipRouters;
  principals: Principals;
}

export const SKIP_TAG = 'Cisco SKIP';

/**
 * The four SKIP operations, mapped onto the ETSI 014 key service: a router is the SAE its config names, GET /key
 * is enc_keys for one key shared with the SAE of remoteSystemID, GET /key/{keyId} is dec_keys of that key with the
 * SAE of remoteSystemID as its master. So pool, pairing, policies, custody events and fetch-once are the key
 * service's, unchanged; this file only translates names and encodings (base64 → hex, UUID → 32 hex digits).
 */
export const skipRoutes: FastifyPluginAsyncTypebox<SkipRouteOptions> = async (app, { keys, routers, principals }) => {
  /** The router of this connection, and the SAE caller it acts as; refused while its SAE is not active. */
  const callerOf = (request: FastifyRequest): { router: SkipRouter; caller: SaeCaller } => {
    const socket = request.raw.socket as TLSSocket;
    const router = routers.routerOf(socket);
    if (!router) throw unauthorized('no router identified on this connection (pre-shared key, or a certificate of skip.tls.ca with the certificate_cn of a router)');
    const status = principals.get('sae', router.saeId)?.status;
    if (status !== 'active') throw unauthorized(`SAE ${router.saeId} of router ${router.systemId} is ${status ?? 'not registered'}`);
    // With a PSK there is no certificate: the custody log names the PSK identity that authenticated the router.
    return { router, caller: { saeId: router.saeId, certSha256: credentialOf(router, socket) } };
  };
  const saeOfRemote = (router: SkipRouter, remoteSystemID: string): string => {
    const sae = routers.saeOf(remoteSystemID);
    if (!sae) throw badRequest(`remoteSystemID ${remoteSystemID} is unknown here; known: ${routers.remoteSystemsOf(router).join(', ') || 'none'}`);
    if (remoteSystemID === router.systemId) throw badRequest(`remoteSystemID ${remoteSystemID} is the calling router itself`);
    return sae;
  };
  const hex = (base64: string) => Buffer.from(base64, 'base64').toString('hex');

  app.get(
    '/capabilities',
    { schema: { summary: 'Capabilities', description: 'What this Key Provider serves the calling router.', tags: [SKIP_TAG], response: { 200: CapabilitiesSchema, ...SkipErrorResponses } } },
    (request) => {
      const { router } = callerOf(request);
      return { entropy: true, key: true, algorithm: 'QKD (ETSI GS QKD 014 key pool)', localSystemID: router.systemId, remoteSystemID: routers.remoteSystemsOf(router) };
    },
  );

  app.get(
    '/key',
    {
      schema: {
        summary: 'Get a new key',
        description: 'A fresh key shared with remoteSystemID, which fetches it once with GET /key/{keyId}.',
        tags: [SKIP_TAG],
        querystring: KeyQuerySchema,
        response: { 200: KeySchema, ...SkipErrorResponses },
      },
    },
    async (request) => {
      const { router, caller } = callerOf(request);
      const slave = saeOfRemote(router, request.query.remoteSystemID);
      const gone = () => request.raw.socket?.destroyed ?? true;
      const container = await keys.getKeys(caller, slave, { number: 1, ...(request.query.size !== undefined ? { size: request.query.size } : {}) }, gone);
      const k = container.keys[0]!;
      return { keyId: skipKeyIdOf(k.key_ID), key: hex(k.key) };
    },
  );

  app.get(
    '/key/:keyId',
    {
      schema: {
        summary: 'Get a key by its keyId',
        description: 'The key remoteSystemID obtained with GET /key for this router; each key is handed out here once.',
        tags: [SKIP_TAG],
        params: KeyByIdParamsSchema,
        querystring: KeyByIdQuerySchema,
        response: { 200: KeySchema, ...SkipErrorResponses, 404: SkipErrorSchema },
      },
    },
    async (request) => {
      const { router, caller } = callerOf(request);
      const master = saeOfRemote(router, request.query.remoteSystemID);
      const keyId = etsiKeyIdOf(request.params.keyId);
      if (!keyId) throw badRequest(`keyId ${JSON.stringify(request.params.keyId.slice(0, 80))} is not 32 hex digits`);
      const container = await keys.getKeysWithIds(caller, master, [keyId]).catch((err: unknown) => {
        if (err instanceof KmsError && err.message === EtsiMessage.keysNotFound) {
          throw new KmsError(404, `key ${request.params.keyId} not found: unknown, already fetched, expired, or not obtained by ${request.query.remoteSystemID} for this router`);
        }
        throw err;
      });
      const k = container.keys[0]!;
      return { keyId: skipKeyIdOf(k.key_ID), key: hex(k.key) };
    },
  );

  app.get(
    '/entropy',
    {
      schema: {
        summary: 'Get entropy',
        description: "Random bytes from this KME's CSPRNG (not QKD key material, which is kept for keys).",
        tags: [SKIP_TAG],
        querystring: EntropyQuerySchema,
        response: { 200: EntropySchema, ...SkipErrorResponses },
      },
    },
    (request) => {
      callerOf(request);
      const bits = request.query.minentropy ?? 256;
      if (bits % 8 !== 0) throw badRequest('minentropy must be a multiple of 8');
      return { randomStr: randomBytes(bits / 8).toString('hex'), minentropy: bits };
    },
  );
};

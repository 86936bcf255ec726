import type { FastifyPluginAsync } from 'fastify';
import type { TLSSocket } from 'node:tls';
import { callerOf } from '../../auth/client-certificate.js';
import type { Principals } from '../../auth/principals.js';
import { unauthorized } from '../../errors.js';
import type { KeyService } from '../../keys/key-service.js';
import type { SaeCaller } from '../../keys/types.js';
import { statusRoute } from './status.js';
import { encKeysRoutes } from './enc-keys.js';
import { decKeysRoutes } from './dec-keys.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated SAE; set by the ETSI plugin's onRequest hook before any handler runs. */
    sae: SaeCaller;
  }
}

export interface Etsi014Options {
  keys: KeyService;
  principals: Principals;
}

/**
 * The ETSI GS QKD 014 API under /api/v1/keys. Every request must come from the certificate of a registered, active
 * SAE; anything else is a 401 before routing reaches a handler (on an open keep-alive connection too, from the first
 * request after an operator suspended or revoked it).
 */
export const etsi014Routes: FastifyPluginAsync<Etsi014Options> = async (app, opts) => {
  app.decorateRequest('sae', undefined as unknown as SaeCaller);
  app.addHook('onRequest', async (request) => {
    const caller = callerOf(request.raw.socket as TLSSocket, opts.principals);
    if (!caller.ok) throw unauthorized(caller.reason);
    request.sae = { saeId: caller.saeId, certSha256: caller.certSha256 };
  });
  const routeOpts = { keys: opts.keys, principals: opts.principals }; // not `opts`: it carries the prefix
  await app.register(statusRoute, routeOpts);
  await app.register(encKeysRoutes, routeOpts);
  await app.register(decKeysRoutes, routeOpts);
};

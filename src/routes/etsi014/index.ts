import type { FastifyPluginAsync } from 'fastify';
import type { TLSSocket } from 'node:tls';
import { callerOf } from '../../auth/client-certificate.js';
import type { SaeRegistry } from '../../auth/sae-registry.js';
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
  registry: SaeRegistry;
}

/**
 * The ETSI GS QKD 014 API under /api/v1/keys. Every request must come from a registered SAE's certificate;
 * anything else is a 401 before routing reaches a handler.
 */
export const etsi014Routes: FastifyPluginAsync<Etsi014Options> = async (app, opts) => {
  app.decorateRequest('sae', undefined as unknown as SaeCaller);
  app.addHook('onRequest', async (request) => {
    const caller = callerOf(request.raw.socket as TLSSocket, opts.registry);
    if (!caller.ok) throw unauthorized(caller.reason);
    request.sae = { saeId: caller.saeId, certSha256: caller.certSha256 };
  });
  const routeOpts = { keys: opts.keys, registry: opts.registry }; // not `opts`: it carries the prefix
  await app.register(statusRoute, routeOpts);
  await app.register(encKeysRoutes, routeOpts);
  await app.register(decKeysRoutes, routeOpts);
};

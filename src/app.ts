import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { SecureContextOptions, TLSSocket, TlsOptions } from 'node:tls';
import { callerOf } from './auth/client-certificate.js';
import type { SaeRegistry } from './auth/sae-registry.js';
import type { KeyService } from './keys/key-service.js';
import type { Logger } from './log.js';
import type { Db } from './store/db.js';
import { writeAuditEvents } from './audit/writer.js';
import { installErrorHandling } from './http/error-handler.js';
import { registerJsonBodyParser } from './http/json-body.js';
import { validatorCompiler } from './http/validation.js';
import { registerDocumentedRoutes } from './routes/index.js';

export interface AppDeps {
  keys: KeyService;
  registry: SaeRegistry;
  db: Db;
  log: Logger;
  /** Server certificate, key, client CA and the rest of the mutual-TLS set-up (see `tlsServerOptions`). */
  tls: TlsOptions & SecureContextOptions;
}

/**
 * Builds the HTTPS app: framework plugins, then our parsing/validation/error policy, then the routes.
 * Domain logic lives in KeyService; this file only wires it to HTTP.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // Typed as the plain instance: the HTTPS server and pino logger generics add nothing the routes use.
  const app = Fastify({
    https: deps.tls,
    loggerInstance: deps.log as FastifyBaseLogger,
    // Per-request logs would cost throughput and say little; refusals and faults are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    keepAliveTimeout: 30_000,
    bodyLimit: 64 * 1024,
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;

  app.setValidatorCompiler(validatorCompiler());
  registerJsonBodyParser(app);
  installErrorHandling(app, (request, error) => {
    // The same identity the ETSI routes authenticate with (cached per TLS socket), also for refusals outside them.
    const caller = callerOf(request.raw.socket as TLSSocket, deps.registry);
    const sae = caller.ok ? caller.saeId : undefined;
    const cert = caller.certSha256;
    request.log.info({ status: error.statusCode, url: request.url, sae, reason: error.message }, 'request refused');
    writeAuditEvents(deps.db, [
      {
        operation: operationOf(request.url),
        outcome: 'refused',
        actor: sae ? `sae:${sae}` : 'anonymous',
        actorCert: cert,
        detail: { method: request.method, path: request.url.split('?')[0], status: error.statusCode, reason: error.message },
      },
    ]).catch((err: Error) => request.log.warn({ err: { message: err.message } }, 'could not audit a refused request'));
  });

  await registerDocumentedRoutes(app, { keys: deps.keys, registry: deps.registry });
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  return app;
}

function operationOf(url: string): 'status' | 'deliver_master' | 'deliver_slave' | 'request' {
  const path = url.split('?')[0] ?? '';
  if (path.endsWith('/status')) return 'status';
  if (path.endsWith('/enc_keys')) return 'deliver_master';
  if (path.endsWith('/dec_keys')) return 'deliver_slave';
  return 'request';
}

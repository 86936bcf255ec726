import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Principals } from '../auth/principals.js';
import type { RefusalLog } from '../audit/refusals.js';
import { ConfigError } from '../config/load.js';
import { installErrorHandling } from '../http/error-handler.js';
import { validatorCompiler } from '../http/validation.js';
import type { KeyService } from '../keys/key-service.js';
import type { Logger } from '../log.js';
import type { SkipConfig } from './config.js';
import { registerSkipRoutes } from './openapi.js';
import { credentialOf, SkipRouters } from './routers.js';

export interface SkipServer {
  /** https://host:port */
  url: string;
  close(): Promise<void>;
}

/**
 * TLS 1.3 suites first. Node hands OpenSSL an external PSK through the PSK callbacks, which TLS 1.3 pairs with a
 * SHA-256 suite only, so TLS_AES_128_GCM_SHA256 is what a PSK handshake negotiates. The TLS 1.2 PSK suites (with
 * ephemeral (EC)DH first, for forward secrecy) apply only when min_tls_version allows TLS 1.2.
 */
const PSK_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
].join(':');
/** With skip.tls, TLS 1.2 certificate suites too (TLS 1.3 needs none beyond the above). */
const CERTIFICATE_CIPHERS = ['ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES128-GCM-SHA256'].join(':');

export interface SkipServerDeps {
  config: SkipConfig;
  keys: KeyService;
  principals: Principals;
  refusals?: RefusalLog;
  log: Logger;
}

/**
 * The SKIP listener (config `skip`): HTTPS with a pre-shared key per router and no certificate, apart from the
 * mutual-TLS ETSI API, serving the routes of routes.ts on the KME's own key service. A handshake with an unknown
 * identity or a wrong key fails in TLS; nothing reaches HTTP.
 */
export async function startSkipServer(deps: SkipServerDeps): Promise<SkipServer> {
  const routers = new SkipRouters(deps.config);
  // Remote systems' SAEs are checked where the key service checks any slave: in the topology, at each request.
  for (const sae of routers.localSaeIds()) {
    if (!deps.principals.isRegistered('sae', sae)) throw new ConfigError(`skip: SAE ${sae} of a SKIP router is not among this KME's saes`);
  }
  const log = deps.log.child({ api: 'skip' });
  const certificates = deps.config.tls ? readCertificates(deps.config.tls) : undefined;
  const app = Fastify({
    https: {
      minVersion: deps.config.min_tls_version,
      ciphers: certificates ? `${PSK_CIPHERS}:${CERTIFICATE_CIPHERS}` : PSK_CIPHERS,
      // A client certificate is asked for and checked against skip.tls.ca, but a connection without one is not cut
      // here: a PSK handshake has none, and routers.routerOf() accepts only a PSK or an authorized certificate.
      ...(certificates ? { ...certificates, requestCert: true, rejectUnauthorized: false } : {}),
      pskCallback: (socket: TLSSocket, identity: string) => routers.pskFor(socket, identity),
      handshakeTimeout: 10_000,
    },
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    keepAliveTimeout: 30_000,
    requestTimeout: 30_000,
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;
  // A router with a wrong key or identity never reaches HTTP: say so in the log, since it sees only a TLS alert.
  app.server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) =>
    log.warn({ remote: socket.remoteAddress, reason: err.code ?? err.message }, 'SKIP handshake refused: unknown PSK identity, wrong key or TLS version'),
  );
  app.setValidatorCompiler(validatorCompiler());
  installErrorHandling(app, (request, error) => {
    const router = routers.routerOf(request.raw.socket as TLSSocket);
    const outcome = error.statusCode >= 500 ? 'failed' : 'refused';
    const actor = router ? `sae:${router.saeId}` : 'anonymous';
    request.log.info({ status: error.statusCode, url: request.url, actor, reason: error.message }, outcome === 'failed' ? 'SKIP request failed' : 'SKIP request refused');
    deps.refusals?.record({
      operation: 'request',
      outcome,
      actor,
      ...(router ? { actorCert: credentialOf(router, request.raw.socket as TLSSocket) } : {}),
      detail: { api: 'skip', method: request.method, path: request.url.split('?')[0], status: error.statusCode, reason: error.message },
    });
  });
  await registerSkipRoutes(app, { keys: deps.keys, routers, principals: deps.principals });
  await app.listen({ host: deps.config.listen.host, port: deps.config.listen.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : deps.config.listen.port;
  const host = deps.config.listen.host === '0.0.0.0' || deps.config.listen.host === '::' ? 'localhost' : deps.config.listen.host;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info({ url, routers: deps.config.routers.map((r) => r.system_id), min_tls_version: deps.config.min_tls_version }, 'SKIP listener (TLS-PSK) listening');
  return { url, close: () => app.close() };
}

function readCertificates(tls: NonNullable<SkipConfig['tls']>): { cert: Buffer; key: Buffer; ca: Buffer } {
  const read = (field: 'cert' | 'key' | 'ca') => {
    try {
      return readFileSync(tls[field]);
    } catch (err) {
      throw new ConfigError(`skip.tls.${field}: cannot read ${tls[field]}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  return { cert: read('cert'), key: read('key'), ca: read('ca') };
}

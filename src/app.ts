import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { SecureContextOptions, TLSSocket, TlsOptions } from 'node:tls';
import { auditorOf, callerOf, operatorOf, peerOf } from './auth/client-certificate.js';
import type { AuditorService } from './audit/auditor-service.js';
import type { PeerService } from './peers/peer-service.js';
import type { Principals } from './auth/principals.js';
import type { KeyAdmin } from './admin/key-admin.js';
import type { PoolAdmin } from './admin/pool-admin.js';
import type { PolicyAdmin } from './admin/policy-admin.js';
import type { TlsRotation } from './tls-rotation.js';
import type { KekRotation } from './lifecycle/kek-rotation.js';
import type { SaeAdmin } from './admin/sae-admin.js';
import type { KeyService } from './keys/key-service.js';
import type { Logger } from './log.js';
import type { Db } from './store/db.js';
import type { RefusalLog } from './audit/refusals.js';
import type { MetricOperation, RequestMetrics } from './metrics/request-metrics.js';
import { etsiClientErrorHandler } from './http/client-errors.js';
import { connectionLimits } from './http/connection-limits.js';
import { registerLoadShedding } from './http/load-shedding.js';
import { registerSaeRateLimit } from './http/rate-limit.js';
import type { Config } from './config/schema.js';
import { installErrorHandling } from './http/error-handler.js';
import { registerJsonBodyParser } from './http/json-body.js';
import { validatorCompiler } from './http/validation.js';
import { registerDocumentedRoutes, splitOpenapi } from './routes/index.js';

export interface AppDeps {
  keys: KeyService;
  /** Who may call which API: SAEs, peer KMEs, auditors, operators (the registry's in-memory image). */
  principals: Principals;
  /** The KME-to-KME API. */
  peers: PeerService;
  /** The auditor API. */
  auditor: AuditorService;
  /** The admin API's SAE operations. */
  saeAdmin: SaeAdmin;
  /** The admin API's key operations. */
  keyAdmin: KeyAdmin;
  /** The admin API's pool operations. */
  poolAdmin: PoolAdmin;
  /** The admin API's policies per SAE pair. */
  policyAdmin: PolicyAdmin;
  /** The admin API's certificate rotation. */
  tlsRotation: TlsRotation;
  /** The admin API's KEK rotation. */
  kek: KekRotation;
  /** Where refused and failed requests are audited (batched; unidentified callers counted). */
  refusals: RefusalLog;
  db: Db;
  log: Logger;
  /** Server certificate, key, client CA and the rest of the mutual-TLS set-up (see `tlsServerOptions`). */
  tls: TlsOptions & SecureContextOptions;
  /** The listener's time limits (config `listen`). */
  listen: Config['listen'];
  /** Past this event-loop delay requests are shed with a 503 (config `requests.max_event_loop_delay_ms`; 0: never). */
  maxEventLoopDelayMs: number;
  /** The request-rate limit per SAE (config requests.per_sae), counted in Redis when there is one. */
  perSae?: { max: number; windowMs: number; redisPrefix: string; redis?: import('ioredis').Redis };
  /** Counts requests (latency per operation) and refusals by reason; none: not counted. */
  metrics?: RequestMetrics;
}

/**
 * Builds the HTTPS app: framework plugins, then our parsing/validation/error policy, then the routes.
 * Domain logic lives in KeyService; this file only wires it to HTTP.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // Typed as the plain instance: the HTTPS server and pino logger generics add nothing the routes use.
  const app = Fastify({
    https: { ...deps.tls, ...connectionLimits(deps.listen) },
    loggerInstance: deps.log as FastifyBaseLogger,
    // Per-request logs would cost throughput and say little; refusals and faults are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    keepAliveTimeout: deps.listen.keep_alive_timeout_ms,
    requestTimeout: deps.listen.request_timeout_ms,
    bodyLimit: 64 * 1024,
    clientErrorHandler: etsiClientErrorHandler, // parser refusals get an ETSI Error body too
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;

  app.setValidatorCompiler(validatorCompiler());
  registerJsonBodyParser(app);
  const metrics = deps.metrics;
  if (metrics) {
    // Every answer, shed and refused ones too: one observation on a cached label set.
    app.addHook('onResponse', (request, reply, done) => {
      metrics.request(metricOperationOf(request.url), reply.statusCode, reply.elapsedTime / 1000);
      done();
    });
  }
  await registerLoadShedding(app, { maxEventLoopDelayMs: deps.maxEventLoopDelayMs, log: deps.log });
  if (deps.perSae) await registerSaeRateLimit(app, { ...deps.perSae, principals: deps.principals });
  installErrorHandling(app, (request, error) => {
    // The same identity the routes authenticate with (cached per TLS socket), also for refusals outside them.
    const socket = request.raw.socket as TLSSocket;
    const operation = operationOf(request.url);
    const caller =
      operation === 'peer_request'
        ? peerOf(socket, deps.principals)
        : operation === 'audit_request'
          ? auditorOf(socket, deps.principals)
          : operation === 'admin_request'
            ? operatorOf(socket, deps.principals)
            : callerOf(socket, deps.principals);
    const actor = !caller.ok
      ? 'anonymous'
      : 'kmeId' in caller
        ? `kme:${caller.kmeId}`
        : 'auditorId' in caller
          ? `auditor:${caller.auditorId}`
          : 'operatorId' in caller
            ? `operator:${caller.operatorId}`
            : `sae:${caller.saeId}`;
    const outcome = error.statusCode >= 500 ? 'failed' : 'refused';
    metrics?.refused(METRIC_OPERATION[operation], actor, error);
    request.log.info({ status: error.statusCode, url: request.url, actor, reason: error.message }, outcome === 'failed' ? 'request failed' : 'request refused');
    deps.refusals.record({
      operation,
      outcome,
      actor,
      actorCert: caller.certSha256,
      detail: { method: request.method, path: request.url.split('?')[0], status: error.statusCode, reason: error.message },
    });
  });

  await registerDocumentedRoutes(app, {
    keys: deps.keys,
    principals: deps.principals,
    peers: deps.peers,
    auditor: deps.auditor,
    saeAdmin: deps.saeAdmin,
    keyAdmin: deps.keyAdmin,
    poolAdmin: deps.poolAdmin,
    policyAdmin: deps.policyAdmin,
    tlsRotation: deps.tlsRotation,
    kek: deps.kek,
  });
  // Each audience gets its own contract: SAEs the ETSI 014 API, peer KMEs the KME-to-KME API, auditors theirs.
  const docs = splitOpenapi(() => app.swagger());
  app.get('/openapi.json', { schema: { hide: true } }, () => docs().etsi);
  app.get('/kmapi/openapi.json', { schema: { hide: true } }, () => docs().peer);
  app.get('/audit/openapi.json', { schema: { hide: true } }, () => docs().audit);
  app.get('/admin/openapi.json', { schema: { hide: true } }, () => docs().admin);
  return app;
}

/** The audit log's operation names, as the metrics' `operation` label says them. */
const METRIC_OPERATION: Record<ReturnType<typeof operationOf>, MetricOperation> = {
  status: 'status',
  deliver_master: 'enc_keys',
  deliver_slave: 'dec_keys',
  request: 'other',
  peer_request: 'peer',
  audit_request: 'audit',
  admin_request: 'admin',
};

/** The operation a request's latency is counted under (the onResponse hook; bench/metrics-overhead.ts times it). */
export function metricOperationOf(url: string): MetricOperation {
  return METRIC_OPERATION[operationOf(url)];
}

function operationOf(url: string): 'status' | 'deliver_master' | 'deliver_slave' | 'request' | 'peer_request' | 'audit_request' | 'admin_request' {
  const path = url.split('?')[0] ?? '';
  if (path.startsWith('/kmapi/') || path.startsWith('/peer/')) return 'peer_request';
  if (path.startsWith('/audit/')) return 'audit_request';
  if (path.startsWith('/admin/')) return 'admin_request';
  if (path.endsWith('/status')) return 'status';
  if (path.endsWith('/enc_keys')) return 'deliver_master';
  if (path.endsWith('/dec_keys')) return 'deliver_slave';
  return 'request';
}

import Fastify from 'fastify';
import type { Logger } from '../log.js';
import type { Registry } from 'prom-client';
import type { Readiness } from './readiness.js';

export interface OpsServer {
  /** http://host:port */
  url: string;
  close(): Promise<void>;
}

/**
 * The operations listener (config `ops.listen`): plain HTTP, no client certificate, for the probes of a load
 * balancer or an orchestrator, apart from the mutual-TLS APIs. It answers only about this process, never about keys:
 * - `GET /livez`: 200 while the process serves HTTP at all (a stalled event loop answers nothing: restart it);
 * - `GET /readyz`: 200 when the database and the HSM answer and the process is not shutting down, else 503; both
 *   with `{status, checks}` naming what failed;
 * - `GET /metrics`: the KME's Prometheus metrics (src/metrics/, docs/observability.md), when given a registry.
 * Bind it to an address only the probes reach (default 127.0.0.1).
 */
export async function startOpsServer(opts: { host: string; port: number; readiness: Readiness; metrics?: Registry; log: Logger }): Promise<OpsServer> {
  const app = Fastify({ logger: false, keepAliveTimeout: 5_000, requestTimeout: 10_000 });
  app.get('/livez', async () => ({ status: 'alive' }));
  app.get('/readyz', async (_request, reply) => {
    const state = await opts.readiness.state();
    reply.code(state.ready ? 200 : 503);
    return { status: state.ready ? 'ready' : 'not ready', checks: state.checks };
  });
  const metrics = opts.metrics;
  if (metrics) app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ message: 'the ops listener serves GET /livez, GET /readyz and GET /metrics' }));
  await app.listen({ host: opts.host, port: opts.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const url = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  opts.log.info({ url }, 'ops listener (liveness, readiness) listening');
  return { url, close: () => app.close() };
}

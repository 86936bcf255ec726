import underPressure from '@fastify/under-pressure';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import { EventLoopDelay } from './event-loop-delay.js';

/**
 * Load shedding (@fastify/under-pressure): when the event loop lags more than `maxEventLoopDelayMs` on average over
 * its last one-second sample, every request gets a 503 with the ETSI Error body and `Retry-After: 1` at once, before
 * any work, until the lag falls back. Past that lag the KME could not answer within a request's deadline anyway:
 * refusing quickly keeps the process alive and tells clients to come back, instead of queueing work nobody waits
 * for. Shed requests take nothing and are not audited one by one (auditing is work); a warn line says it happens,
 * at most every 10 s.
 */
export async function registerLoadShedding(app: FastifyInstance, opts: { maxEventLoopDelayMs: number; log: Logger }): Promise<void> {
  if (opts.maxEventLoopDelayMs <= 0) return;
  const delay = new EventLoopDelay();
  app.addHook('onClose', async () => delay.stop());
  let shed = 0;
  let warnedAt = 0;
  await app.register(underPressure, {
    // The plugin's machinery (a flag checked first thing on every request, refreshed on a timer), our measure.
    healthCheck: async () => delay.ms <= opts.maxEventLoopDelayMs,
    healthCheckInterval: 250,
    // The handler answers itself (the plugin's documented form: a reply sent here ends the request before routing).
    pressureHandler: (_request, reply) => {
      const lag = Math.round(delay.ms);
      shed++;
      if (Date.now() - warnedAt >= 10_000) {
        opts.log.warn({ event_loop_delay_ms: lag, shed }, 'overloaded: requests shed with 503');
        warnedAt = Date.now();
        shed = 0;
      }
      void reply
        .code(503)
        .header('retry-after', '1')
        .send({ message: `the KME is overloaded (its event loop lags ${lag} ms); nothing was taken, try again shortly` });
    },
  });
}

import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { TLSSocket } from 'node:tls';
import { callerOf } from '../auth/client-certificate.js';
import type { Principals } from '../auth/principals.js';
import { unavailable } from '../errors.js';

/**
 * A request-rate limit per SAE on the ETSI 014 API (config `requests.per_sae`; @fastify/rate-limit): an SAE past
 * `max` requests in `windowMs` gets a 503 with the ETSI Error body and Retry-After until the window moves on.
 * Counted in Redis when the KME has one (all replicas together; keys `<prefix>:rl:…`), else in this process.
 * Keyed by the SAE the client certificate names (cached per TLS socket: no extra work per request); requests of
 * callers that are not SAEs, and the other APIs, are not counted. While Redis is away the limit is not enforced
 * (a guard against floods, not a custody control: the keys-per-minute limits of policies fail closed instead).
 */
export async function registerSaeRateLimit(
  app: FastifyInstance,
  opts: { max: number; windowMs: number; principals: Principals; redisPrefix: string; redis?: Redis },
): Promise<void> {
  await app.register(rateLimit, {
    max: opts.max,
    timeWindow: opts.windowMs,
    ...(opts.redis ? { redis: opts.redis, nameSpace: `${opts.redisPrefix}:rl:`, skipOnError: true } : {}),
    keyGenerator: (request) => {
      const caller = callerOf(request.raw.socket as TLSSocket, opts.principals);
      return caller.ok && 'saeId' in caller ? `sae:${caller.saeId}` : '';
    },
    allowList: (request, key) => key === '' || !request.url.startsWith('/api/v1/'),
    errorResponseBuilder: (_request, context) =>
      unavailable(`this SAE made more than ${context.max} requests in ${opts.windowMs / 1000} s at this KME: try again in ${Math.ceil(context.ttl / 1000)} s`),
  });
}

import { readSecret } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { CacheTopic, Coordinator } from './coordinator.js';
import { InProcessCoordinator } from './in-process.js';

/** The coordinator the config names: Redis with `coordination.redis`, else in-process (one node). */
export async function openCoordinator(config: Config, log: Logger): Promise<Coordinator> {
  const redis = config.coordination?.redis;
  if (!redis) {
    log.info('coordinator: in-process (no coordination.redis: replicas of this KME would each cache and count alone)');
    return new InProcessCoordinator();
  }
  const { RedisCoordinator } = await import('./redis.js'); // ioredis loads only where it is used
  const target = redis.sentinels
    ? { sentinels: redis.sentinels, name: redis.master_name!, ...(redis.password_env ? { password: readSecret('the Redis password', redis.password_env) } : {}) }
    : readSecret('the Redis URL', redis.url_env);
  const coordinator = await RedisCoordinator.connect(target, redisPrefix(config), log);
  log.info('coordinator: Redis (cache invalidation, counters and rate limits shared by the replicas)');
  return coordinator;
}

/**
 * Reloads the caches a change concerns, at once, when the coordinator says another replica (or this one) changed
 * them; everything after a reconnect. The caches' own polls stay on as the backstop. Returns the unsubscribe.
 */
export function reloadOnChange(coordinator: Coordinator, caches: Record<CacheTopic, { reload(): Promise<void> }>, log: Logger): () => Promise<void> {
  const off = coordinator.onChange((topic) => {
    const topics = topic === 'all' ? (Object.keys(caches) as CacheTopic[]) : [topic];
    for (const t of topics) {
      caches[t]?.reload().catch((err: Error) => log.warn({ topic: t, err: { message: err.message } }, 'could not reload after a change (the next poll will)'));
    }
  });
  return async () => off();
}

/** Where this KME's keys and channel live in Redis (the rate limits' too). */
export function redisPrefix(config: Config): string {
  return config.coordination?.redis?.key_prefix ?? `qkms:${config.kme_id}`;
}

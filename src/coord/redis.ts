import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import type { CacheTopic, Coordinator, TakeResult } from './coordinator.js';

/**
 * The coordinator of replicas that share a Redis (config `coordination.redis`): one connection for commands and
 * publishing, one subscribed to this KME's channel. Keys and the channel are named `<prefix>:…` (default
 * `qkms:<kme_id>`), so several KMEs, or environments, may share a Redis. Commands are not queued while Redis is
 * away: they fail at once and the caller fails closed. Counters are Lua scripts over one-second buckets, on Redis's
 * clock, so replicas with skewed clocks agree.
 * (Single instance or Sentinel; a Redis Cluster would need the bucket keys in one hash slot.)
 */
export class RedisCoordinator implements Coordinator {
  readonly kind = 'redis';
  readonly redis: Redis;
  private readonly sub: Redis;
  private readonly handlers = new Set<(topic: CacheTopic | 'all') => void>();
  private readonly channel: string;
  private readonly prefix: string;
  private wasDown = false;
  private closing = false;

  private constructor(target: RedisTarget, prefix: string, private readonly log: Logger) {
    this.prefix = prefix;
    this.channel = `${this.prefix}:changes`;
    const options = { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2_000, retryStrategy: (n: number) => Math.min(n * 200, 2_000) };
    const open = (o: RedisOptions) => (typeof target === 'string' ? new Redis(target, o) : new Redis({ ...target, ...o }));
    this.redis = open({ ...options, enableOfflineQueue: false });
    this.sub = open(options);
    for (const [name, c] of [['commands', this.redis], ['subscriber', this.sub]] as const) {
      c.on('error', (err: Error) => this.log.debug({ connection: name, err: { message: err.message } }, 'redis connection error'));
    }
    this.sub.on('close', () => {
      if (this.closing) return; // our own close: nothing was lost
      if (!this.wasDown) this.log.warn('lost the connection to Redis: caches fall back on polling the database, shared counters refuse');
      this.wasDown = true;
    });
    this.sub.on('ready', () => {
      if (!this.wasDown) return;
      this.wasDown = false;
      this.log.info('Redis is back: caches reload, shared counters count again');
      this.emit('all'); // messages sent meanwhile were lost
    });
    this.sub.on('message', (channel: string, topic: string) => {
      if (channel === this.channel) this.emit(topic as CacheTopic);
    });
    this.redis.defineCommand('qkmsTake', { numberOfKeys: 1, lua: TAKE });
    this.redis.defineCommand('qkmsRefund', { numberOfKeys: 1, lua: REFUND });
  }

  /**
   * Connects both connections and subscribes; rejects with a clear message when Redis does not answer. `target`: a
   * Redis URL, or Sentinel options (`sentinels`, `name` of the monitored master, `password`): ioredis then asks the
   * sentinels for the master and follows it through a failover.
   */
  static async connect(target: RedisTarget, prefix: string, log: Logger): Promise<RedisCoordinator> {
    const c = new RedisCoordinator(target, prefix, log);
    try {
      await Promise.all([c.redis.connect(), c.sub.connect()]);
      await c.sub.subscribe(c.channel);
    } catch (err) {
      await c.close();
      throw new Error(`cannot reach Redis at ${describe(target)}: ${(err as Error).message}`);
    }
    return c;
  }

  async publish(topic: CacheTopic): Promise<void> {
    await this.redis.publish(this.channel, topic).catch((err: Error) => this.log.warn({ topic, err: { message: err.message } }, 'could not tell the other replicas of a change (they will see it at their next poll)'));
  }

  onChange(handler: (topic: CacheTopic | 'all') => void): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  async take(name: string, n: number, limit: number, windowS: number): Promise<TakeResult> {
    const [ok, a, b] = (await (this.redis as unknown as Scripts).qkmsTake(`${this.prefix}:count:${name}`, n, limit, windowS)).map(Number) as [number, number, number];
    return ok === 1 ? { ok: true, second: a } : { ok: false, used: a, retryAfterS: b };
  }

  async refund(name: string, n: number, second: number, windowS: number): Promise<void> {
    await (this.redis as unknown as Scripts).qkmsRefund(`${this.prefix}:count:${name}`, n, second, windowS).catch(() => undefined);
  }

  async check(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer within 1 s')), 1_000)));
    try {
      await Promise.race([this.redis.ping(), late]);
    } catch (err) {
      throw new Error(`redis: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    this.handlers.clear();
    this.sub.disconnect();
    this.redis.disconnect();
  }

  private emit(topic: CacheTopic | 'all'): void {
    for (const h of this.handlers) h(topic);
  }
}

export type RedisTarget = string | Pick<RedisOptions, 'sentinels' | 'name' | 'password'>;

interface Scripts {
  qkmsTake(key: string, n: number, limit: number, windowS: number): Promise<Array<number | string>>;
  qkmsRefund(key: string, n: number, second: number, windowS: number): Promise<unknown>;
}

/** Where Redis was looked for, without its password, for messages. */
function describe(target: RedisTarget): string {
  if (typeof target !== 'string') return `master ${target.name} of sentinels ${(target.sentinels ?? []).map((s) => `${s.host}:${s.port}`).join(', ')}`;
  const url = target;
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(an unparsable URL)';
  }
}

// KEYS[1]: the counter's prefix; ARGV: n, limit, window seconds. Buckets `<prefix>:<second>` on Redis's clock.
// Returns {1, second} when taken, else {0, used, seconds until n more would fit}.
const TAKE = `
local n, limit, w = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
local counts, used = {}, 0
for i = 0, w - 1 do
  local c = tonumber(redis.call('GET', KEYS[1] .. ':' .. (now - i)) or '0')
  counts[i] = c
  used = used + c
end
if used + n > limit then
  local freed = 0
  for j = 1, w do
    freed = freed + counts[w - j]
    if used - freed + n <= limit then return {0, used, j} end
  end
  return {0, used, w}
end
redis.call('INCRBY', KEYS[1] .. ':' .. now, n)
redis.call('EXPIRE', KEYS[1] .. ':' .. now, w + 1)
return {1, now}
`;

// KEYS[1]: the counter's prefix; ARGV: n, the second it was taken at, window seconds.
const REFUND = `
local n, second, w = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
if second <= now - w then return 0 end
local key = KEYS[1] .. ':' .. second
if redis.call('EXISTS', key) == 0 then return 0 end
local left = redis.call('DECRBY', key, n)
if left < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
return 1
`;

import { Socket } from 'node:net';

/** The Redis the tests use: REDIS_URL, or the machine's (127.0.0.1:6379). */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Why Redis tests cannot run here (undefined when Redis answers a PING). */
export async function redisSkipReason(url = REDIS_URL): Promise<string | undefined> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (why?: string) => (s.destroy(), resolve(why));
    s.setTimeout(1_000, () => done(`no Redis answered at ${url} within 1 s (start one: see ../shared/environment.md)`));
    s.once('error', (e) => done(`no Redis at ${url}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    s.connect(Number(port || 6379), hostname, () => s.write('PING\r\n'));
    s.once('data', (d) => done(d.toString().startsWith('+PONG') ? undefined : `unexpected answer from ${url}: ${d.toString().slice(0, 40)}`));
  });
}

/** A Redis key prefix no other test uses, so that tests sharing the machine's Redis never see each other's keys. */
export function uniquePrefix(): string {
  return `qkms-test:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
}

/** A free TCP port for a redis-server a test starts (it cannot listen on port 0 and say which it got). */
export { serverPort } from '../../src/ports.js';

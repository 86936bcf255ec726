import type { Response } from './client.js';

/** Small checks and waits shared by the key, store and audit tests. */

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const NOT_FOUND = 'one or more keys specified are not found on KME';

/**
 * Why `res` is not a well-formed ETSI 014 Error answer, or undefined when it is: a JSON object with a string
 * `message`, optionally `details` (an array of objects), nothing else, and no stack trace or internals in it.
 */
export function etsiErrorProblem(res: Response): string | undefined {
  const b = res.body as Record<string, unknown> | undefined;
  if (!b || typeof b !== 'object' || Array.isArray(b)) return `not a JSON object: ${res.text.slice(0, 200)}`;
  if (typeof b.message !== 'string' || b.message.length === 0) return `no message: ${res.text.slice(0, 200)}`;
  const extra = Object.keys(b).filter((k) => k !== 'message' && k !== 'details');
  if (extra.length > 0) return `unexpected fields ${extra.join(',')}: ${res.text.slice(0, 200)}`;
  if (b.details !== undefined && (!Array.isArray(b.details) || b.details.some((d) => typeof d !== 'object' || d === null))) {
    return `details is not an array of objects: ${res.text.slice(0, 200)}`;
  }
  if (/\bat .+[.:](ts|js):\d+|node_modules|\n\s+at /.test(res.text)) return `stack trace in body: ${res.text.slice(0, 300)}`;
  if (!/application\/json/.test(String(res.headers['content-type']))) return `content-type ${res.headers['content-type']}`;
  return undefined;
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function eventually<T>(fn: () => Promise<T>, timeoutMs = 3_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(intervalMs);
  }
}

/** Every `len`-byte window of `buf` (at every offset), as latin1 strings: cheap Set/Map keys. */
export function windows(buf: Buffer, len: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + len <= buf.length; i++) out.push(buf.toString('latin1', i, i + len));
  return out;
}

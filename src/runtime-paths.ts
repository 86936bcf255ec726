import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the running code is, whether it runs from the TypeScript sources (tsx, in development and most tests) or
 * compiled to `dist/` (`npm run build`; the `kms` command, the container and the systemd unit).
 */

/** True when this module is compiled JavaScript (dist/), false under tsx. */
const COMPILED = import.meta.url.endsWith('.js');

/**
 * The project's folder (the one with package.json): migrations/ and openapi/ are read from it at run time. Found by
 * walking up, because src/x.ts and dist/src/x.js sit at different depths below it.
 */
export const PROJECT_ROOT = findUp(dirname(fileURLToPath(import.meta.url)), 'package.json');

function findUp(from: string, name: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, name))) return dir;
    if (dirname(dir) === dir) throw new Error(`no ${name} above ${from}: the KME must run from its project folder or an install of it`);
  }
}

/**
 * The file a worker thread starts from. Compiled, the worker's own `.js` (plain Node runs it). From the sources, its
 * `-entry.cjs`, which registers tsx for the thread first (a worker starts without the main thread's loader).
 * `base` is the caller's import.meta.url; `name` the worker's module name without extension.
 */
export function workerEntry(base: string, name: string): URL {
  return COMPILED ? new URL(`./${name}.js`, base) : new URL(`./${name}-entry.cjs`, base);
}

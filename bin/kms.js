#!/usr/bin/env node
// The `kms` command runs the compiled code (dist/, made by `npm run build`, which `npm ci` runs through `prepare`).
// From the TypeScript sources, without building, run `npm run kms -- …` (tsx) instead.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/run.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('kms: not built (no dist/src/cli/run.js): run `npm run build` first, or `npm run kms -- …` from the sources\n');
  process.exit(1);
}
await import(entry.href);

import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Runs `kms …` the way an operator does (as the user `as`, when given): the compiled code through bin/kms.js (issue 15: production-path tests run
 * what production runs). `npm test` builds first; a test run alone after editing src/ needs `npm run build`.
 */
export function runKms(args: string[], env: Record<string, string | undefined> = {}, as?: { uid: number; gid: number }): KmsProcess {
  assertBuilt();
  const child = spawn(process.execPath, [join(ROOT, 'bin/kms.js'), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    ...as, // another user (tests of the packaged service); only root may ask
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc: KmsProcess = { child, stdout: '', stderr: '', exited: new Promise((r) => child.once('exit', (code) => r(code))) };
  child.stdout!.on('data', (d: Buffer) => (proc.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (proc.stderr += d.toString()));
  return proc;
}

let built = false;
/** Refuses to test a dist/ older than the sources: a stale build would test yesterday's code and pass. */
function assertBuilt(): void {
  if (built) return;
  const stamp = join(ROOT, 'dist/src/cli/run.js'); // every build writes every file anew
  let builtAt: number;
  try {
    builtAt = statSync(stamp).mtimeMs;
  } catch {
    throw new Error('dist/ is missing: run `npm run build` (npm test does) before tests that start `kms`');
  }
  const newer = ['src', 'hsm-mock'].flatMap((dir) => newerThan(join(ROOT, dir), builtAt));
  if (newer.length) throw new Error(`dist/ is older than ${newer.slice(0, 3).join(', ')}: run \`npm run build\``);
  built = true;
}

function newerThan(dir: string, ms: number): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return newerThan(path, ms);
    return /\.(ts|cjs)$/.test(e.name) && statSync(path).mtimeMs > ms ? [path.slice(ROOT.length)] : [];
  });
}

export interface KmsProcess {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

/** Waits until `predicate` holds, or fails after `ms` with what the process printed. */
export async function waitFor(proc: KmsProcess, predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (proc.child.exitCode !== null) throw new Error(`kms exited (${proc.child.exitCode}) before ${what}:\n${proc.stdout}\n${proc.stderr}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${proc.stdout}\n${proc.stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

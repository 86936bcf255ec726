import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Runs `kms …` the way an operator does (through tsx), collecting output. */
export function runKms(args: string[], env: Record<string, string | undefined> = {}): KmsProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/run.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc: KmsProcess = { child, stdout: '', stderr: '', exited: new Promise((r) => child.once('exit', (code) => r(code))) };
  child.stdout!.on('data', (d: Buffer) => (proc.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (proc.stderr += d.toString()));
  return proc;
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

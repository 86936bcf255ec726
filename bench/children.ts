// Child processes of the benchmark (the KME and the reference server), so that the load generator in this
// process never shares an event loop with a server. Their output is kept (bounded) to report warnings and errors.
import { spawn, type ChildProcess } from 'node:child_process';

export interface Child {
  name: string;
  proc: ChildProcess;
  /** Output lines seen so far (the most recent MAX_LINES), stdout and stderr interleaved. */
  lines: string[];
  /** Total lines seen, including those dropped from `lines`. */
  lineCount: () => number;
  exited: Promise<number | null>;
  stop: () => Promise<void>;
}

const MAX_LINES = 500;

export function startChild(name: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Child {
  // process.execPath directly (not npx or a shell): the pid we hold is the server itself, so a signal reaches it.
  const proc = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let count = 0;
  const take = (chunk: Buffer, carry: { rest: string }) => {
    const parts = (carry.rest + chunk.toString('utf8')).split('\n');
    carry.rest = parts.pop() ?? '';
    for (const line of parts) {
      count++;
      lines.push(line);
      if (lines.length > MAX_LINES) lines.shift();
    }
  };
  const out = { rest: '' };
  const err = { rest: '' };
  proc.stdout!.on('data', (c: Buffer) => take(c, out));
  proc.stderr!.on('data', (c: Buffer) => take(c, err));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM'); // the KME closes gracefully on SIGTERM (and writes its CPU profile if asked to)
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return { name, proc, lines, lineCount: () => count, exited, stop };
}

/** Resolves with the first stdout line that `match` accepts; rejects if the child exits first or time runs out. */
export function waitForLine<T>(child: Child, match: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${child.name}: no ready line within ${timeoutMs} ms`)), timeoutMs);
    const check = () => {
      for (const line of child.lines) {
        const found = match(line);
        if (found !== undefined) return done(undefined, found);
      }
    };
    const onExit = (code: number | null) =>
      done(new Error(`${child.name} exited (code ${code}) before it was ready:\n${child.lines.slice(-20).join('\n')}`));
    const done = (err?: Error, value?: T) => {
      clearTimeout(timer);
      child.proc.stdout!.off('data', check);
      child.proc.off('exit', onExit);
      if (err) reject(err);
      else resolve(value as T);
    };
    child.proc.stdout!.on('data', check);
    child.proc.once('exit', onExit);
    check();
  });
}

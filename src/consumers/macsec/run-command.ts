import { spawn } from 'node:child_process';
import { scrubHex } from './key-material.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs `file args…` with `input` on its stdin (the only way key bytes reach a tool: never argv, never the
 * environment), and resolves with its output when it exits 0. Otherwise rejects with an error carrying the exit
 * status and the tool's stderr with long hex runs removed, since tools echo bad arguments back.
 * The child gets the agent's environment unchanged and no shell.
 */
export function runCommand(file: string, args: readonly string[], input: string | null, timeoutMs = 10_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => {}); // a tool that exits early closes the pipe; its exit status tells what happened
    child.once('error', (err) => reject(new Error(`${file}: ${err.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) return resolve({ stdout, stderr });
      const why = signal ? `was killed by ${signal}` : `exited with ${code}`;
      const said = scrubHex(`${stderr}\n${stdout}`);
      reject(new Error(`${file} ${args.join(' ')} ${why}${said ? `: ${said}` : ''}`));
    });
    child.stdin.end(input ?? '');
  });
}

import { spawn } from 'node:child_process';
import { isAbsolute } from 'node:path';
import type { Writable } from 'node:stream';
import { ConnectorConfigError, type Connector, type ConnectorContext, type ConnectorFactory, type ConsumerKey } from '../connector.js';

/**
 * The `exec` connector: an operator's script does each step, for encryptors no other connector knows.
 *
 *   { "type": "exec", "command": "/usr/local/sbin/rekey", "args": ["wan0"],
 *     "key_via": "stdin" | "fd3", "key_format": "hex" | "base64" | "raw", "timeout_ms": 30000 }
 *
 * Each step runs `command ...args STEP [KEY_ID]` with STEP one of stage, activate, retire, shutdown, and the
 * environment KMS_BINDING, KMS_ROLE, KMS_STEP, KMS_KEY_ID, KMS_WORK_DIR (and KMS_REASON for shutdown). For stage
 * and activate the key comes on stdin or on file descriptor 3 (hex and base64 end with a newline): never in argv
 * or the environment, which other users of the machine can read. Exit 0 = done; anything else fails the step with
 * an error that names the script and its exit code. Steps are repeated after failures and restarts: the script
 * must be idempotent, like every connector.
 */
export interface ExecSettings {
  command: string;
  args: string[];
  keyVia: 'stdin' | 'fd3';
  keyFormat: 'hex' | 'base64' | 'raw';
  timeoutMs: number;
}

const KNOWN = new Set(['type', 'command', 'args', 'key_via', 'key_format', 'timeout_ms']);

export function parseExecSettings(s: Record<string, unknown>): ExecSettings {
  for (const key of Object.keys(s)) {
    if (!KNOWN.has(key)) throw new ConnectorConfigError(`connector.${key}`, `unknown setting; known: ${[...KNOWN].join(', ')}`);
  }
  const { command, args = [], key_via = 'stdin', key_format = 'hex', timeout_ms = 30_000 } = s;
  if (typeof command !== 'string' || !isAbsolute(command)) throw new ConnectorConfigError('connector.command', 'must be the absolute path of the script');
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new ConnectorConfigError('connector.args', 'must be a list of strings');
  if (key_via !== 'stdin' && key_via !== 'fd3') throw new ConnectorConfigError('connector.key_via', 'must be "stdin" or "fd3"');
  if (key_format !== 'hex' && key_format !== 'base64' && key_format !== 'raw') {
    throw new ConnectorConfigError('connector.key_format', 'must be "hex", "base64" or "raw"');
  }
  if (typeof timeout_ms !== 'number' || !Number.isInteger(timeout_ms) || timeout_ms < 100) {
    throw new ConnectorConfigError('connector.timeout_ms', 'must be an integer of at least 100');
  }
  return { command, args: args as string[], keyVia: key_via, keyFormat: key_format, timeoutMs: timeout_ms };
}

export class ExecConnector implements Connector {
  constructor(
    private readonly settings: ExecSettings,
    private readonly context: ConnectorContext,
  ) {}

  stage(key: ConsumerKey): Promise<void> {
    return this.run('stage', key.keyId, key.key);
  }

  activate(key: ConsumerKey): Promise<void> {
    return this.run('activate', key.keyId, key.key);
  }

  retire(keyId: string): Promise<void> {
    return this.run('retire', keyId);
  }

  shutDown(reason: string): Promise<void> {
    return this.run('shutdown', undefined, undefined, reason);
  }

  async close(): Promise<void> {}

  private run(step: string, keyId?: string, key?: Buffer, reason?: string): Promise<void> {
    const { command, args, keyVia, timeoutMs } = this.settings;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KMS_BINDING: this.context.binding,
      KMS_ROLE: this.context.role,
      KMS_STEP: step,
      KMS_WORK_DIR: this.context.workDir,
      ...(keyId ? { KMS_KEY_ID: keyId } : {}),
      ...(reason ? { KMS_REASON: reason } : {}),
    };
    const what = `exec connector: ${command} ${step}${keyId ? ` ${keyId}` : ''}`;
    return new Promise((resolve, reject) => {
      const child = spawn(command, [...args, step, ...(keyId ? [keyId] : [])], {
        env,
        cwd: this.context.workDir,
        stdio: [keyVia === 'stdin' && key ? 'pipe' : 'ignore', 'ignore', 'pipe', ...(keyVia === 'fd3' && key ? ['pipe' as const] : [])],
      });
      let stderr = '';
      child.stderr?.on('data', (c: Buffer) => {
        if (stderr.length < 2048) stderr += c.toString('utf8');
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(`${what}: cannot run it: ${err.code ?? err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve();
        const how = signal === 'SIGKILL' && code === null ? `was killed after ${timeoutMs} ms` : signal ? `ended by ${signal}` : `exited with code ${code}`;
        this.context.log.warn({ step, keyId, stderr: this.shown(stderr, key) }, `${what} ${how}`);
        reject(new Error(`${what} ${how}`));
      });
      if (key) {
        const pipe = (keyVia === 'stdin' ? child.stdin : child.stdio[3]) as Writable | null;
        // A script that exits without reading closes the pipe: its exit code tells what happened, not EPIPE.
        pipe?.on('error', () => undefined);
        pipe?.end(this.encode(key));
      }
    });
  }

  private encode(key: Buffer): Buffer {
    const { keyFormat } = this.settings;
    return keyFormat === 'raw' ? key : Buffer.from(key.toString(keyFormat) + '\n');
  }

  /** The script's stderr for the log, unless it echoed the key it was given. */
  private shown(stderr: string, key?: Buffer): string {
    if (key && [key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('base64'), key.toString('latin1')].some((form) => stderr.includes(form))) {
      return '(withheld: it contains the key)';
    }
    return stderr.trim().slice(-1024);
  }
}

export const execConnector: ConnectorFactory = {
  type: 'exec',
  create: (settings, context) => new ExecConnector(parseExecSettings(settings), context),
};

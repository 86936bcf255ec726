import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectorContext, ConsumerKey } from '../../../src/consumers/connector.js';
import { capturingLogger } from '../../helpers/logs.js';

/** Fixed keys so the expected configurations and commands can be written out in full. */
export const KEY_ID_1 = '0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0';
export const KEY_ID_2 = '11111111-2222-4333-8444-555555555555';
export const KEY16: ConsumerKey = { keyId: KEY_ID_1, key: Buffer.from('00112233445566778899aabbccddeeff', 'hex') };
export const KEY32: ConsumerKey = { keyId: KEY_ID_1, key: Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex') };
export const KEY32_B: ConsumerKey = { keyId: KEY_ID_2, key: Buffer.from('f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101', 'hex') };

/** A private work directory and a real logger that keeps every line, as the agent would give a connector. */
export function testContext(role: 'master' | 'slave' = 'master'): { ctx: ConnectorContext; logText: () => string; dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'macsec-'));
  chmodSync(dir, 0o700);
  const { log, text } = capturingLogger();
  return { ctx: { binding: 'link-a', role, workDir: dir, log }, logText: text, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A stand-in for a command that records every argv and environment it was started with, then execs the real
 * command (`exec` keeps the argv, so what is recorded is what /proc/PID/cmdline of the real tool shows).
 * With `real` null it records its stdin instead and exits 0: a mock, for where the real tool cannot run here.
 */
export function recordingCommand(dir: string, name: string, real: string | null): { path: string; argv: () => string[][]; env: () => string; stdin: () => string } {
  const path = join(dir, `${name}-recorder.sh`);
  const argvLog = join(dir, `${name}.argv`);
  const envLog = join(dir, `${name}.env`);
  const stdinLog = join(dir, `${name}.stdin`);
  const tail = real ? `exec ${real} "$@"` : `cat >> '${stdinLog}'\nexit 0`;
  writeFileSync(path, `#!/bin/sh\nprintf '%s\\037' "$@" >> '${argvLog}'\nprintf '\\n' >> '${argvLog}'\nenv >> '${envLog}'\n${tail}\n`, { mode: 0o700 });
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    path,
    argv: () => read(argvLog).split('\n').filter(Boolean).map((l) => l.split('\x1f').slice(0, -1)),
    env: () => read(envLog),
    stdin: () => read(stdinLog),
  };
}

/** A network namespace with a veth pair, or the reason there cannot be one here (not root, no netns support). */
export function netnsWithVeth(name: string, ifaces: [string, string]): { ok: true; remove: () => void } | { ok: false; why: string } {
  const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });
  ip('netns', 'del', name);
  const steps = [
    ['netns', 'add', name],
    ['-n', name, 'link', 'add', ifaces[0], 'type', 'veth', 'peer', 'name', ifaces[1]],
    ['-n', name, 'link', 'set', ifaces[0], 'up'],
    ['-n', name, 'link', 'set', ifaces[1], 'up'],
  ];
  for (const args of steps) {
    const r = ip(...args);
    if (r.error || r.status !== 0) {
      ip('netns', 'del', name);
      return { ok: false, why: `ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}` };
    }
  }
  return { ok: true, remove: () => void ip('netns', 'del', name) };
}

/** Where a program is on PATH, or null. */
export function which(program: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Why network-namespace tests cannot run here, or false when they can (probes by making and removing one). */
export function netnsSkipReason(): string | false {
  const probe = netnsWithVeth(`kmsprobe${process.pid}`, ['probe0', 'probe1']);
  if (!probe.ok) return `no network namespace with a veth pair here (${probe.why})`;
  probe.remove();
  return false;
}

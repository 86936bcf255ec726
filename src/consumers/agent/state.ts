import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../config/load.js';
import type { AgentRole } from '../connector.js';

/**
 * What an agent remembers about one binding across restarts: key_IDs, steps and times, never key bytes (a state
 * file is an operator's file like any other; the keys live only in the agent's memory and in the encryptor).
 *
 * Master steps of a rotation: `requested` (enc_keys answered, the slave not yet told) → `peer_staged` (the slave
 * said it staged the key) → `activated` (the master's encryptor switched; the slave not yet confirmed).
 * Slave steps: `fetching` (offered; dec_keys may or may not have answered) → `staged` (in the encryptor, not in service).
 */
export type Step = 'requested' | 'peer_staged' | 'activated' | 'fetching' | 'staged';

export interface BindingState {
  version: 1;
  binding: string;
  role: AgentRole;
  /** The key in service and when it went into service (its age counts from there). */
  current?: { keyId: string; activatedAt: string };
  /** The key `current` replaced, kept until the peer confirmed the switch (the master may fall back to it). */
  previous?: { keyId: string; activatedAt: string };
  /** A rotation under way. */
  pending?: { keyId: string; step: Step; startedAt: string };
  /** When the master tries its next rotation (the slave: when it expects one). */
  nextRotationAt?: string;
  lastRotationAt?: string;
  rotations: number;
  lastError?: { at: string; message: string };
  /** Set when the key in service passed max_age_seconds and the binding's policy was applied; cleared by a rotation. */
  expired?: { at: string; policy: 'fail_closed' | 'fail_open' };
  updatedAt: string;
}

export function stateFile(stateDir: string, binding: string): string {
  return join(stateDir, `${binding}.state.json`);
}

/** Reads a binding's state; undefined when it has none yet. A file that is not a state file is a ConfigError naming it. */
export function readState(stateDir: string, binding: string): BindingState | undefined {
  const file = stateFile(stateDir, binding);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read agent state ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let state: BindingState;
  try {
    state = JSON.parse(text) as BindingState;
  } catch {
    throw new ConfigError(`agent state ${file} is not valid JSON (remove it to start the binding afresh)`);
  }
  if (state?.version !== 1 || state.binding !== binding) throw new ConfigError(`agent state ${file} is not a state file of binding ${binding}`);
  return state;
}

/**
 * Writes a binding's state atomically (a temporary file, fsync, rename over the old one), mode 0600: after a crash
 * the file holds either the old state or the new one, never half of each.
 */
export function writeState(stateDir: string, state: BindingState): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = stateFile(stateDir, state.binding);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify({ ...state, updatedAt: new Date().toISOString() }, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

export function pidFile(stateDir: string): string {
  return join(stateDir, 'agent.pid');
}

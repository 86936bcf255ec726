import { readFileSync } from 'node:fs';
import { table } from '../../admin/table.js';
import type { AgentConfig } from './config.js';
import { pidFile, readState, type BindingState } from './state.js';

/**
 * `kms agent status`: read from the state directory, so that it answers the same for a running agent and a
 * stopped one (the state files are written at every step). Whether the agent runs comes from its pid file.
 */
export interface BindingStatus {
  name: string;
  role: string;
  connector: string;
  peer: string;
  current_key_id: string | null;
  key_age_seconds: number | null;
  /** Master: when the next rotation (or retry) runs; slave: when the master is expected to rotate. */
  next_rotation_at: string | null;
  last_rotation_at: string | null;
  rotations: number;
  pending: { key_id: string; step: string; started_at: string } | null;
  /** Set while the key in service is past its maximum age: which policy was applied, and when. */
  expired: { policy: string; at: string } | null;
  last_error: { at: string; message: string } | null;
}

export interface AgentStatus {
  running: boolean;
  pid: number | null;
  state_dir: string;
  bindings: BindingStatus[];
}

export function agentStatus(config: AgentConfig, now = Date.now()): AgentStatus {
  const pid = readPid(config.state_dir);
  const bindings = config.bindings.map((b): BindingStatus => {
    let s: BindingState | undefined;
    let unreadable: string | undefined;
    try {
      s = readState(config.state_dir, b.name);
    } catch (err) {
      unreadable = (err as Error).message;
    }
    return {
      name: b.name,
      role: b.role,
      connector: b.connector.type,
      peer: b.peer.identity,
      current_key_id: s?.current?.keyId ?? null,
      key_age_seconds: s?.current ? Math.max(0, Math.round((now - Date.parse(s.current.activatedAt)) / 1000)) : null,
      next_rotation_at: s?.nextRotationAt ?? null,
      last_rotation_at: s?.lastRotationAt ?? null,
      rotations: s?.rotations ?? 0,
      pending: s?.pending ? { key_id: s.pending.keyId, step: s.pending.step, started_at: s.pending.startedAt } : null,
      expired: s?.expired ?? null,
      last_error: unreadable ? { at: new Date(now).toISOString(), message: unreadable } : (s?.lastError ?? null),
    };
  });
  return { running: pid !== null, pid, state_dir: config.state_dir, bindings };
}

/** The pid of the running agent, or null when its pid file is absent or names a process that is gone. */
function readPid(stateDir: string): number | null {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile(stateDir), 'utf8'), 10);
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
}

/** The status as an operator reads it in a terminal. */
export function statusLines(status: AgentStatus): string[] {
  const head = status.running ? `agent running (pid ${status.pid}); state in ${status.state_dir}` : `agent not running; state in ${status.state_dir}`;
  const rows = status.bindings.map((b) => [
    b.name,
    b.role,
    b.current_key_id ?? '-',
    b.key_age_seconds === null ? '-' : `${b.key_age_seconds}s`,
    b.next_rotation_at ?? '-',
    b.expired ? b.expired.policy : b.pending ? `rotating (${b.pending.step})` : b.current_key_id ? 'ok' : 'no key yet',
    b.last_error ? `${b.last_error.at} ${b.last_error.message}` : '-',
  ]);
  return [head, ...table(['BINDING', 'ROLE', 'KEY_ID', 'AGE', 'NEXT ROTATION', 'STATE', 'LAST ERROR'], rows)];
}

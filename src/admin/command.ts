import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config/load.js';
import { HttpJsonError } from '../http/json-client.js';
import { AdminClient, adminTarget, type TargetFlags } from './client.js';

/**
 * What every `kms <noun> …` command over the admin API shares (`kms sae`, `kms key`): where the KME is, `--json`,
 * `--help`, and the exit status — 0 done, 1 refused by the KME (its reason printed), 2 bad usage (the bad argument
 * named before the KME is asked).
 */

export const TARGET_HELP = `Every command takes --json (the API's answer) and where the KME is, with an operator certificate:
  --url URL --ca FILE --cert FILE --key FILE   or KMS_ADDR, KMS_CACERT, KMS_CLIENT_CERT, KMS_CLIENT_KEY
  default: the running demo (--demo DIR, default ./.kms-demo) at the KME --kme ID (default the first)
Exit status: 0 done, 1 refused by the KME (the reason is printed), 2 bad usage.
`;

const TARGET_OPTIONS = {
  url: { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  demo: { type: 'string' },
  kme: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

/** A mistake in the command line; the message names the bad argument. */
export class UsageError extends Error {}

export type Out = (line: string) => void;
export type Values = Record<string, string | boolean | string[] | undefined>;

/** One subcommand: its own options, the API call it makes, and how its answer reads in a terminal. */
export interface AdminCommand {
  options: NonNullable<ParseArgsConfig['options']>;
  call(client: AdminClient, values: Values, positionals: string[]): Promise<unknown>;
  /** The answer as lines for a terminal (with `--json`, the answer itself is printed instead). */
  show(answer: unknown, values: Values): string[];
}

/** Runs `kms <noun> <command> …`; returns the exit status. */
export async function runAdminCommand(
  noun: string,
  usage: string,
  commands: Record<string, AdminCommand>,
  args: string[],
  out: Out,
  err: Out,
): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    out(usage);
    return command === undefined ? 2 : 0;
  }
  let client: AdminClient | undefined;
  try {
    const run = commands[command];
    if (!run) throw new UsageError(`unknown command "${command}"`);
    const { values, positionals } = parse(rest, run.options);
    if (values.help) {
      out(usage);
      return 0;
    }
    client = new AdminClient(adminTarget(values as TargetFlags));
    const answer = await run.call(client, values, positionals);
    if (values.json) out(JSON.stringify(answer, null, 2));
    else for (const line of run.show(answer, values)) out(line);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`kms ${noun}: ${e.message} (kms ${noun} help)`);
      return 2;
    }
    if (e instanceof ConfigError) {
      err(`kms ${noun}: ${e.message}`);
      return 2;
    }
    if (e instanceof HttpJsonError) {
      err(`kms ${noun} ${command}: ${e.status ? `refused (${e.status}): ` : ''}${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    client?.close();
  }
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options: { ...TARGET_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * The one argument a command takes (an SAE_ID, a LINK_ID), checked here so that the error names it before the KME is
 * asked: `rule` says what it must be ("1–64 letters, digits and . _ ~ -").
 */
export function oneArgument(positionals: string[], name: string, pattern: RegExp, rule: string): string {
  if (positionals.length !== 1) throw new UsageError(`give exactly one ${name}${positionals.length ? ` (got ${positionals.join(' ')})` : ''}`);
  const value = positionals[0]!;
  if (!pattern.test(value)) throw new UsageError(`${name} "${value}": use ${rule}`);
  return value;
}

/** `--reason TEXT` as the admin API takes it: a `reason` field, or nothing when the flag was not given. */
export const reasonOf = (values: Values): { reason?: string } => (typeof values.reason === 'string' ? { reason: values.reason } : {});

export function noPositionals(positionals: string[]): void {
  if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
}

/** A duration such as 90s, 30m, 12h or 7d, in seconds; undefined when `value` is not one. */
function seconds(value: string): number | undefined {
  const m = /^(\d{1,7})([smhd])$/.exec(value);
  return m ? Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as 's' | 'm' | 'h' | 'd'] : undefined;
}

/** A duration flag (90s, 30m, 12h, 7d) in seconds, checked here so that the error names the flag. */
export function durationArg(flag: string, value: unknown): number {
  const s = typeof value === 'string' ? seconds(value) : undefined;
  if (s === undefined) throw new UsageError(`${flag} ${value === undefined ? 'is required' : `"${String(value)}"`}: a duration such as 90s, 30m, 12h or 7d`);
  return s;
}

/** An ISO 8601 time, or a duration back from now: 30m, 12h, 7d. Checked here so that the error names the flag. */
export function timeArg(flag: string, value: unknown, now = Date.now()): string {
  if (typeof value !== 'string' || value === '') throw new UsageError(`${flag} is required: a time (2026-11-30T12:00:00Z) or a duration back from now (30m, 12h, 7d)`);
  const ago = seconds(value);
  if (ago !== undefined) return new Date(now - ago * 1000).toISOString();
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) throw new UsageError(`${flag} "${value}": a time (2026-11-30T12:00:00Z) or a duration back from now (30m, 12h, 7d)`);
  return new Date(t).toISOString();
}

/** A timestamp as a terminal shows it: to the second, UTC. */
export const shortTime = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');

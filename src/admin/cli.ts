import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config/load.js';
import { FingerprintPattern, IdPattern, TagNamePattern } from '../config/schema.js';
import type { SaeView } from '../schemas/admin.js';
import { HttpJsonError } from '../http/json-client.js';
import { AdminClient, adminTarget, type TargetFlags } from './client.js';
import { table } from './table.js';

export const SAE_USAGE = `usage: kms sae <command> [options]

  list [--status active|suspended|revoked]   the SAEs of the KME
  show SAE_ID                                one SAE
  enroll SAE_ID [--cn CN] [--sha256 FINGERPRINT] [--allowed-peer SAE_ID]... [--tag NAME=VALUE]...
                                             a certificate identity becomes an SAE (CN default: the SAE ID)
  suspend SAE_ID [--reason TEXT]             no key for it from its next request on, until resumed
  resume SAE_ID [--reason TEXT]              back to active
  revoke SAE_ID [--reason TEXT]              for good: its ID and certificate name are never admitted again

Every command takes --json (the API's answer) and where the KME is, with an operator certificate:
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

class UsageError extends Error {}
type Out = (line: string) => void;

/** `kms sae …`: SAE lifecycle over the admin API. Returns the exit status. */
export async function saeCommand(args: string[], out: Out, err: Out): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    out(SAE_USAGE);
    return command === undefined ? 2 : 0;
  }
  let client: AdminClient | undefined;
  try {
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}"`);
    const { values, positionals } = parse(rest, run.options);
    if (values.help) {
      out(SAE_USAGE);
      return 0;
    }
    client = new AdminClient(adminTarget(values as TargetFlags));
    const answer = await run.call(client, values, positionals);
    if (values.json) out(JSON.stringify(answer, null, 2));
    else for (const line of run.show(answer)) out(line);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`kms sae: ${e.message} (kms sae help)`);
      return 2;
    }
    if (e instanceof ConfigError) {
      err(`kms sae: ${e.message}`);
      return 2;
    }
    if (e instanceof HttpJsonError) {
      err(`kms sae ${command}: ${e.status ? `refused (${e.status}): ` : ''}${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    client?.close();
  }
}

type Values = Record<string, string | boolean | string[] | undefined>;
interface Command {
  options: NonNullable<ParseArgsConfig['options']>;
  call(client: AdminClient, values: Values, positionals: string[]): Promise<unknown>;
  show(answer: unknown): string[];
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options: { ...TARGET_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const ID = new RegExp(IdPattern);
const FINGERPRINT = new RegExp(FingerprintPattern);
const TAG = new RegExp(`^(${TagNamePattern.slice(1, -1)})=(.{0,128})$`);

/** The one SAE_ID a command takes, checked here so that the error names it before the KME is asked. */
function saeIdOf(positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(`give exactly one SAE_ID${positionals.length ? ` (got ${positionals.join(' ')})` : ''}`);
  const id = positionals[0]!;
  if (!ID.test(id)) throw new UsageError(`SAE_ID "${id}": use 1–64 letters, digits and . _ ~ -`);
  return id;
}

function noPositionals(positionals: string[]): void {
  if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
}

const path = (id: string) => `/admin/v1/saes/${encodeURIComponent(id)}`;

function saeRows(saes: SaeView[]): string[] {
  return table(
    ['SAE', 'STATUS', 'CERTIFICATE CN', 'ALLOWED PEERS', 'TAGS', 'SOURCE', 'CHANGED'],
    saes.map((s) => [
      s.sae_id,
      s.unlisted ? `${s.status} (unlisted)` : s.status,
      s.certificate_cn + (s.certificate_sha256 ? ' (pinned)' : ''),
      s.allowed_peers ? s.allowed_peers.join(',') || '(none)' : 'any',
      Object.entries(s.tags).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      s.source,
      s.changed_at.replace(/\.\d+Z$/, 'Z'),
    ]),
  );
}

const one: Command['show'] = (answer) => saeRows([answer as SaeView]);

function statusChange(change: 'suspend' | 'resume' | 'revoke'): Command {
  return {
    options: { reason: { type: 'string' } },
    call: (client, values, positionals) =>
      client.call('POST', `${path(saeIdOf(positionals))}/${change}`, values.reason === undefined ? {} : { reason: values.reason }),
    show: one,
  };
}

const COMMANDS: Record<string, Command> = {
  list: {
    options: { status: { type: 'string' } },
    call: (client, values, positionals) => {
      noPositionals(positionals);
      const status = values.status as string | undefined;
      if (status !== undefined && !['active', 'suspended', 'revoked'].includes(status)) {
        throw new UsageError(`--status "${status}": one of active, suspended, revoked`);
      }
      return client.call('GET', `/admin/v1/saes${status ? `?status=${status}` : ''}`);
    },
    show: (answer) => {
      const { saes } = answer as { saes: SaeView[] };
      return saes.length ? saeRows(saes) : ['no SAE matches'];
    },
  },
  show: { options: {}, call: (client, _values, positionals) => client.call('GET', path(saeIdOf(positionals))), show: one },
  enroll: {
    options: { cn: { type: 'string' }, sha256: { type: 'string' }, 'allowed-peer': { type: 'string', multiple: true }, tag: { type: 'string', multiple: true } },
    call: (client, values, positionals) => {
      const saeId = saeIdOf(positionals);
      const peers = values['allowed-peer'] as string[] | undefined;
      for (const p of peers ?? []) if (!ID.test(p)) throw new UsageError(`--allowed-peer "${p}": not an SAE ID`);
      const tags: Record<string, string> = {};
      for (const t of (values.tag as string[] | undefined) ?? []) {
        const m = TAG.exec(t);
        if (!m) throw new UsageError(`--tag "${t}": NAME=VALUE, NAME in lower case (letters, digits, _)`);
        tags[m[1]!] = m[2]!;
      }
      if (values.sha256 !== undefined && !FINGERPRINT.test(values.sha256 as string)) {
        throw new UsageError(`--sha256: a SHA-256 fingerprint (64 hex digits, colons allowed)`);
      }
      return client.call('POST', '/admin/v1/saes', {
        sae_id: saeId,
        ...(values.cn !== undefined ? { certificate_cn: values.cn } : {}),
        ...(values.sha256 !== undefined ? { certificate_sha256: values.sha256 } : {}),
        ...(peers ? { allowed_peers: peers } : {}),
        ...(Object.keys(tags).length ? { tags } : {}),
      });
    },
    show: one,
  },
  suspend: statusChange('suspend'),
  resume: statusChange('resume'),
  revoke: statusChange('revoke'),
};

import { FingerprintPattern, IdPattern, TagNamePattern } from '../config/schema.js';
import type { SaeView } from '../schemas/admin.js';
import { noPositionals, oneArgument, reasonOf, runAdminCommand, shortTime, TARGET_HELP, UsageError, type AdminCommand, type Out } from './command.js';
import { table } from './table.js';

export const SAE_USAGE = `usage: kms sae <command> [options]

  list [--status active|suspended|revoked]   the SAEs of the KME
  show SAE_ID                                one SAE
  enroll SAE_ID [--cn CN] [--sha256 FINGERPRINT] [--allowed-peer SAE_ID]... [--tag NAME=VALUE]...
                                             a certificate identity becomes an SAE (CN default: the SAE ID)
  suspend SAE_ID [--reason TEXT]             no key for it from its next request on, until resumed
  resume SAE_ID [--reason TEXT]              back to active
  revoke SAE_ID [--reason TEXT]              for good: its ID and certificate name are never admitted again

${TARGET_HELP}`;

/** `kms sae …`: SAE lifecycle over the admin API. Returns the exit status. */
export function saeCommand(args: string[], out: Out, err: Out): Promise<number> {
  return runAdminCommand('sae', SAE_USAGE, COMMANDS, args, out, err);
}

const ID = new RegExp(IdPattern);
const FINGERPRINT = new RegExp(FingerprintPattern);
const TAG = new RegExp(`^(${TagNamePattern.slice(1, -1)})=(.{0,128})$`);

const saeIdOf = (positionals: string[]) => oneArgument(positionals, 'SAE_ID', ID, '1–64 letters, digits and . _ ~ -');

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
      shortTime(s.changed_at),
    ]),
  );
}

const one: AdminCommand['show'] = (answer) => saeRows([answer as SaeView]);

function statusChange(change: 'suspend' | 'resume' | 'revoke'): AdminCommand {
  return {
    options: { reason: { type: 'string' } },
    call: (client, values, positionals) =>
      client.call('POST', `${path(saeIdOf(positionals))}/${change}`, reasonOf(values)),
    show: one,
  };
}

const COMMANDS: Record<string, AdminCommand> = {
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

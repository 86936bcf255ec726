import { IdPattern, LinkFailureSchema, TagNamePattern } from '../config/schema.js';
import type { PolicyView } from '../schemas/admin-policies.js';
import { durationArg, noPositionals, runAdminCommand, shortTime, TARGET_HELP, UsageError, type AdminCommand, type Out, type Values } from './command.js';
import { table } from './table.js';

export const POLICY_USAGE = `usage: kms policy <command> [options]

  list                                   the policies per SAE pair of the KME
  show SAE_ID SAE_ID                     one pair's policy (either way round)
  set SAE_ID SAE_ID [--ttl DURATION] [--min-pool N] [--max-per-minute N] [--link-failure MODE] [--tag NAME=VALUE]...
                                         the pair's whole policy (what is left out is unset):
                                           --ttl             how long its keys wait for their slaves (e.g. 10m)
                                           --min-pool        warn below this many keys in the pool it draws from
                                           --max-per-minute  keys it may take a minute here; more get a 503
                                           --link-failure    when its QKD link cannot serve: fail_closed (a 503,
                                                             the default) or pqc_fallback (the master's KME makes
                                                             the key and sends it with ML-KEM-768+X25519; the
                                                             other KME's policy must allow it too)
                                           --tag             recorded on every key delivered under it
  delete SAE_ID SAE_ID                   the KME's defaults apply again

${TARGET_HELP}`;

/** `kms policy …`: policies per SAE pair over the admin API. Returns the exit status. */
export function policyCommand(args: string[], out: Out, err: Out): Promise<number> {
  return runAdminCommand('policy', POLICY_USAGE, COMMANDS, args, out, err);
}

const ID = new RegExp(IdPattern);
const TAG = new RegExp(`^(${TagNamePattern.slice(1, -1)})=(.{0,128})$`);

function pairOf(positionals: string[]): [string, string] {
  if (positionals.length !== 2) throw new UsageError(`give the pair: two SAE_IDs${positionals.length ? ` (got ${positionals.join(' ')})` : ''}`);
  for (const id of positionals) if (!ID.test(id)) throw new UsageError(`SAE_ID "${id}": use 1–64 letters, digits and . _ ~ -`);
  if (positionals[0] === positionals[1]) throw new UsageError(`a pair of two different SAEs, not ${positionals[0]} twice`);
  return [positionals[0]!, positionals[1]!];
}

function count(flag: string, value: Values[string], min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || n < min) throw new UsageError(`${flag} "${String(value)}": a whole number of at least ${min}`);
  return n;
}

function linkFailure(value: Values[string]): string | undefined {
  if (value === undefined) return undefined;
  const modes: readonly string[] = LinkFailureSchema.enum;
  if (typeof value !== 'string' || !modes.includes(value)) throw new UsageError(`--link-failure "${String(value)}": ${modes.join(' or ')}`);
  return value;
}

const path = ([a, b]: [string, string]) => `/admin/v1/policies/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;

function policyRows(policies: PolicyView[]): string[] {
  return table(
    ['PAIR', 'KEY TTL', 'MIN POOL', 'MAX PER MINUTE', 'LINK FAILURE', 'TAGS', 'SOURCE', 'CHANGED'],
    policies.map((p) => [
      p.saes.join(' - '),
      p.key_ttl_seconds !== undefined ? `${p.key_ttl_seconds} s` : 'default',
      p.min_pool_keys !== undefined ? String(p.min_pool_keys) : '-',
      p.max_keys_per_minute !== undefined ? String(p.max_keys_per_minute) : '-',
      p.link_failure,
      Object.entries(p.tags).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      p.source,
      shortTime(p.changed_at),
    ]),
  );
}

const COMMANDS: Record<string, AdminCommand> = {
  list: {
    options: {},
    call: (client, _values, positionals) => {
      noPositionals(positionals);
      return client.call('GET', '/admin/v1/policies');
    },
    show: (answer) => {
      const { policies } = answer as { policies: PolicyView[] };
      return policies.length ? policyRows(policies) : ['no policy: every pair has the KME\'s defaults'];
    },
  },
  show: { options: {}, call: (client, _values, positionals) => client.call('GET', path(pairOf(positionals))), show: (a) => policyRows([a as PolicyView]) },
  set: {
    options: {
      ttl: { type: 'string' },
      'min-pool': { type: 'string' },
      'max-per-minute': { type: 'string' },
      'link-failure': { type: 'string' },
      tag: { type: 'string', multiple: true },
    },
    call: (client, values, positionals) => {
      const pair = pairOf(positionals);
      const tags: Record<string, string> = {};
      for (const t of (values.tag as string[] | undefined) ?? []) {
        const m = TAG.exec(t);
        if (!m) throw new UsageError(`--tag "${t}": NAME=VALUE, NAME in lower case (letters, digits, _)`);
        tags[m[1]!] = m[2]!;
      }
      const minPool = count('--min-pool', values['min-pool'], 0);
      const perMinute = count('--max-per-minute', values['max-per-minute'], 1);
      const onFailure = linkFailure(values['link-failure']);
      return client.call('PUT', path(pair), {
        ...(values.ttl !== undefined ? { key_ttl_seconds: durationArg('--ttl', values.ttl) } : {}),
        ...(minPool !== undefined ? { min_pool_keys: minPool } : {}),
        ...(perMinute !== undefined ? { max_keys_per_minute: perMinute } : {}),
        ...(onFailure !== undefined ? { link_failure: onFailure } : {}),
        ...(Object.keys(tags).length ? { tags } : {}),
      });
    },
    show: (a) => policyRows([a as PolicyView]),
  },
  delete: {
    options: {},
    call: (client, _values, positionals) => client.call('DELETE', path(pairOf(positionals))),
    show: () => ['deleted: the KME\'s defaults apply to the pair again'],
  },
};

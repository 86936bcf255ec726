import { IdPattern } from '../config/schema.js';
import type { KeyChange, KeyChangeResult, KeyView, LinkHoldersView, ReceiptsView } from '../schemas/admin-keys.js';
import type { AdminClient } from './client.js';
import { noPositionals, reasonOf, runAdminCommand, shortTime, TARGET_HELP, timeArg, UsageError, type AdminCommand, type Out, type Values } from './command.js';
import { table } from './table.js';

export const KEY_USAGE = `usage: kms key <command> [options]

  show KEY_ID                            one key: its state here, who received it, its custody events
  suspend KEY_ID... [--reason TEXT]      hold keys at this KME: no slave gets them here until resumed
  resume KEY_ID... [--reason TEXT]       lift the hold
  revoke KEY_ID... [--reason TEXT]       compromised: material erased here and voided at the peer KMEs;
                                         prints every SAE that received the keys from this KME
  destroy KEY_ID... [--reason TEXT]      material erased here and voided at the peer KMEs
  received --sae SAE_ID --since TIME [--until TIME] [--limit N] [--ids]
                                         the keys an SAE received from this KME since TIME (--ids: key_IDs only)
  holders --link LINK_ID --since TIME    the SAEs that received keys made from the link's material since TIME

KEY_ID "-" reads key_IDs from standard input, one per line:
  kms key received --sae SAE_2 --since 24h --ids | kms key revoke - --reason "SAE_2 compromised"
TIME: 2026-11-30T12:00:00Z, or a duration back from now: 30m, 12h, 7d.

${TARGET_HELP}`;

/** `kms key …`: keys over the admin API. `stdin` gives the text of standard input (for KEY_ID "-"). */
export function keyCommand(args: string[], out: Out, err: Out, stdin: () => Promise<string> = readStdin): Promise<number> {
  return runAdminCommand('key', KEY_USAGE, commands(stdin), args, out, err);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ID = new RegExp(IdPattern);
const LINK = /^[A-Za-z0-9._~-]{1,128}$/;
/** The admin API takes this many keys per change; more are sent in several requests. */
const PER_REQUEST = 1024;

function keyIdOf(value: string, from: string): string {
  if (!UUID.test(value)) throw new UsageError(`${from} "${value}" is not a key_ID (a UUID)`);
  return value.toLowerCase();
}

async function keyIdsOf(positionals: string[], stdin: () => Promise<string>): Promise<string[]> {
  if (positionals.length === 0) throw new UsageError('give one or more KEY_IDs, or - to read them from standard input');
  const ids: string[] = [];
  for (const p of positionals) {
    if (p !== '-') ids.push(keyIdOf(p, 'KEY_ID'));
    else {
      const lines = (await stdin()).split('\n').map((l) => l.trim()).filter(Boolean);
      lines.forEach((l, i) => ids.push(keyIdOf(l, `standard input line ${i + 1}:`)));
    }
  }
  if (ids.length === 0) throw new UsageError('standard input held no key_ID');
  return [...new Set(ids)];
}

function change(operation: KeyChange, stdin: () => Promise<string>): AdminCommand {
  return {
    options: { reason: { type: 'string' } },
    async call(client, values, positionals) {
      const ids = await keyIdsOf(positionals, stdin);
      const merged: KeyChangeResult = { operation, changed: [], erased: [], unchanged: [], ...(operation === 'revoke' ? { holders: [] } : {}) };
      const voidedAt = new Set<string>();
      for (let i = 0; i < ids.length; i += PER_REQUEST) {
        const body = { key_ids: ids.slice(i, i + PER_REQUEST), ...reasonOf(values) };
        const r = await client.call<KeyChangeResult>('POST', `/admin/v1/keys/${operation}`, body);
        merged.changed.push(...r.changed);
        merged.erased.push(...r.erased);
        merged.unchanged.push(...r.unchanged);
        merged.holders?.push(...(r.holders ?? []));
        for (const kme of r.voided_at ?? []) voidedAt.add(kme);
      }
      return voidedAt.size > 0 ? { ...merged, voided_at: [...voidedAt].sort() } : merged;
    },
    show(answer) {
      const r = answer as KeyChangeResult;
      const verb = { suspend: 'suspended', resume: 'resumed', revoke: 'revoked as compromised', destroy: 'destroyed' }[r.operation];
      const lines = [`${r.changed.length} key(s) ${verb}${r.operation === 'revoke' ? `, material of ${r.erased.length} erased here` : ''}`];
      if (r.voided_at) lines.push(`peer KMEs asked to void their copies: ${r.voided_at.join(', ')}`);
      if (r.unchanged.length) lines.push('', ...table(['UNCHANGED KEY', 'WHY'], r.unchanged.map((u) => [u.key_ID, u.why])));
      if (r.holders) {
        lines.push('', r.holders.length ? 'received from this KME by:' : 'no SAE received these keys from this KME');
        if (r.holders.length) lines.push(...table(['KEY', 'SAE', 'AS', 'AT'], r.holders.map((h) => [h.key_ID, h.sae_id, h.as, shortTime(h.at)])));
      }
      return lines;
    },
  };
}

function requireMatch(flag: string, value: unknown, pattern: RegExp, what: string): string {
  if (typeof value !== 'string') throw new UsageError(`${flag} is required`);
  if (!pattern.test(value)) throw new UsageError(`${flag} "${value}": not ${what}`);
  return value;
}

function received(): AdminCommand {
  return {
    options: { sae: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' }, limit: { type: 'string' }, ids: { type: 'boolean' } },
    call(client, values: Values, positionals) {
      noPositionals(positionals);
      const sae = requireMatch('--sae', values.sae, ID, 'an SAE ID');
      const query = new URLSearchParams({ since: timeArg('--since', values.since) });
      if (values.until !== undefined) query.set('until', timeArg('--until', values.until));
      if (values.limit !== undefined) {
        const n = Number(values.limit);
        if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new UsageError(`--limit "${values.limit}": a whole number from 1 to 10000`);
        query.set('limit', String(n));
      }
      return client.call('GET', `/admin/v1/saes/${encodeURIComponent(sae)}/keys?${query}`);
    },
    show(answer, values) {
      const r = answer as ReceiptsView;
      if (values.ids) return r.keys.map((k) => k.key_ID); // for a pipe: kms key revoke -
      const more = r.next_after_seq !== undefined ? ['', `more keys follow: narrow --since/--until or raise --limit (next after custody event ${r.next_after_seq})`] : [];
      if (r.keys.length === 0) return [`${r.sae_id} received no key from this KME since ${shortTime(r.since)}`];
      return [...table(['KEY', 'AS', 'LINK', 'AT', 'EVENT'], r.keys.map((k) => [k.key_ID, k.as, k.link_id ?? '?', shortTime(k.at), String(k.seq)])), ...more];
    },
  };
}

const COMMANDS_WITHOUT_STDIN: Record<string, AdminCommand> = {
  show: {
    options: {},
    call: (client, _values, positionals) => {
      if (positionals.length !== 1) throw new UsageError('give exactly one KEY_ID');
      return client.call('GET', `/admin/v1/keys/${keyIdOf(positionals[0]!, 'KEY_ID')}`);
    },
    show(answer) {
      const k = answer as KeyView;
      const facts: Array<[string, string | undefined]> = [
        ['key_ID', k.key_ID],
        ['state', k.state + (k.suspended ? ' (suspended)' : '')],
        ['link', k.link_id],
        ['master SAE', k.master_SAE_ID],
        ['origin KME', k.origin_kme],
        ['slaves', k.slaves?.join(', ')],
        ['relayed to', k.relayed_to?.join(', ')],
        ['size', k.size !== undefined ? `${k.size} bits` : undefined],
        ['material', k.key_origin && (k.key_origin === 'qkd' ? 'QKD' : 'made by the origin KME (link-failure fallback, ML-KEM-768+X25519 between KMEs)')],
        ['created', k.created_at && shortTime(k.created_at)],
        ['expires', k.expires_at && shortTime(k.expires_at)],
        ['ended', k.ended_at && shortTime(k.ended_at)],
        ['tags', k.tags && Object.entries(k.tags).map(([n, v]) => `${n}=${v}`).join(', ')],
        ['received by', k.holders.map((h) => `${h.sae_id} (${h.as}, ${shortTime(h.at)})`).join(', ') || 'nobody, from this KME'],
      ];
      const width = Math.max(...facts.map(([name]) => name.length));
      return [
        ...facts.filter(([, v]) => v !== undefined && v !== '').map(([name, v]) => `${name.padEnd(width)}  ${v}`),
        '',
        ...table(['EVENT', 'AT', 'OPERATION', 'OUTCOME', 'ACTOR'], k.custody.map((s) => [String(s.seq), shortTime(s.at), s.operation, s.outcome, s.actor])),
      ];
    },
  },
  received: received(),
  holders: {
    options: { link: { type: 'string' }, since: { type: 'string' } },
    call(client, values, positionals) {
      noPositionals(positionals);
      const link = requireMatch('--link', values.link, LINK, 'a link ID');
      const since = timeArg('--since', values.since);
      return client.call('GET', `/admin/v1/links/${encodeURIComponent(link)}/holders?since=${encodeURIComponent(since)}`);
    },
    show(answer) {
      const r = answer as LinkHoldersView;
      if (r.holders.length === 0) return [`no SAE received keys of link ${r.link_id} from this KME since ${shortTime(r.since)}`];
      return table(['SAE', 'AS', 'KEYS', 'FIRST', 'LAST'], r.holders.map((h) => [h.sae_id, h.as, String(h.keys), shortTime(h.first_at), shortTime(h.last_at)]));
    },
  },
};

function commands(stdin: () => Promise<string>): Record<string, AdminCommand> {
  const changes = Object.fromEntries((['suspend', 'resume', 'revoke', 'destroy'] as const).map((op) => [op, change(op, stdin)]));
  return { ...COMMANDS_WITHOUT_STDIN, ...changes };
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UsageError('KEY_ID "-" reads standard input, which is a terminal: pipe key_IDs in');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

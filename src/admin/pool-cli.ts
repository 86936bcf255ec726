import type { PoolView } from '../schemas/admin-pools.js';
import { durationArg, noPositionals, oneArgument, reasonOf, runAdminCommand, shortTime, TARGET_HELP, UsageError, type AdminCommand, type Out } from './command.js';
import { table } from './table.js';

export const POOL_USAGE = `usage: kms pool <command> [options]

  list                                   the pools of the KME, one per link
  show LINK_ID                           one pool
  suspend LINK_ID [--reason TEXT]        no keys or one-time pads from it here (503); its device is still read
  resume LINK_ID [--reason TEXT]         back to active (from suspended or draining)
  drain LINK_ID [--reason TEXT]          keys are still made from it; its device is no longer read
  schedule-deletion LINK_ID --in DURATION [--reason TEXT]
                                         destroy its unbound material after DURATION (e.g. 24h, 7d); no keys meanwhile
  cancel-deletion LINK_ID [--reason TEXT]
                                         back to suspended (never straight to active)
  outage LINK_ID SECONDS                 fault drill: this KME's simulated device of the link goes down for
                                         SECONDS (1–86400); refused for a real device (cut it at the device)

A pool is one link's material at this KME: each end of a paired link has its own (act at both ends to stop a link).

An outage drill cuts one end, and that is enough: while either end's device is down no new material is stored for
the link at either KME (the primary reads nothing; a cut secondary cannot fetch, so the primary's new material is
never confirmed). The pools still serve what they hold; once that runs out, pairs whose policy says link_failure
pqc_fallback get fallback keys, the others 503, until the device comes back. The pool's state does not change; the
drill is audited (a pool event).

${TARGET_HELP}`;

/** `kms pool …`: pools over the admin API. Returns the exit status. */
export function poolCommand(args: string[], out: Out, err: Out): Promise<number> {
  return runAdminCommand('pool', POOL_USAGE, COMMANDS, args, out, err);
}

const LINK = /^[A-Za-z0-9._~-]{1,128}$/;

const linkIdOf = (positionals: string[]) => oneArgument(positionals, 'LINK_ID', LINK, '1–128 letters, digits and . _ ~ -');

const path = (id: string) => `/admin/v1/pools/${encodeURIComponent(id)}`;

function poolRows(pools: PoolView[]): string[] {
  return table(
    ['LINK', 'STATE', 'PEER', 'ROLE', 'AVAILABLE', 'KEYS OUT', 'DEVICE READ', 'CHANGED'],
    pools.map((p) => [
      p.link_id,
      p.state === 'pending_deletion' ? `pending deletion at ${shortTime(p.delete_at!)}` : p.state,
      p.peer_kme_id ?? '-',
      p.role,
      `${p.available_blocks} blocks of ${p.block_bits} bits`,
      p.hands_out ? 'yes' : 'no',
      p.ingests ? 'yes' : 'no',
      shortTime(p.changed_at),
    ]),
  );
}

const one: AdminCommand['show'] = (answer) => poolRows([answer as PoolView]);

function change(route: string): AdminCommand {
  return {
    options: { reason: { type: 'string' } },
    call: (client, values, positionals) =>
      client.call('POST', `${path(linkIdOf(positionals))}/${route}`, reasonOf(values)),
    show: one,
  };
}

/** `outage LINK_ID SECONDS`: both checked here so that the error names the bad one before the KME is asked. */
function outageArgs(positionals: string[]): { link: string; seconds: number } {
  if (positionals.length !== 2) throw new UsageError(`give LINK_ID and SECONDS${positionals.length ? ` (got ${positionals.join(' ')})` : ''}`);
  const link = linkIdOf(positionals.slice(0, 1));
  const text = positionals[1]!;
  const seconds = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(seconds >= 1 && seconds <= 86_400)) throw new UsageError(`SECONDS "${text}": a whole number of seconds from 1 to 86400`);
  return { link, seconds };
}

const COMMANDS: Record<string, AdminCommand> = {
  list: {
    options: {},
    call: (client, _values, positionals) => {
      noPositionals(positionals);
      return client.call('GET', '/admin/v1/pools');
    },
    show: (answer) => poolRows((answer as { pools: PoolView[] }).pools),
  },
  show: { options: {}, call: (client, _values, positionals) => client.call('GET', path(linkIdOf(positionals))), show: one },
  suspend: change('suspend'),
  resume: change('resume'),
  drain: change('drain'),
  'cancel-deletion': change('cancel-deletion'),
  'schedule-deletion': {
    options: { in: { type: 'string' }, reason: { type: 'string' } },
    call: (client, values, positionals) => {
      const link = linkIdOf(positionals);
      const wait = durationArg('--in', values.in);
      return client.call('POST', `${path(link)}/schedule-deletion`, { wait_seconds: wait, ...reasonOf(values) });
    },
    show: one,
  },
  outage: {
    options: {},
    call: (client, _values, positionals) => {
      const { link, seconds } = outageArgs(positionals);
      return client.call('POST', `${path(link)}/outage`, { seconds });
    },
    show: (answer) => {
      const a = answer as { link_id: string; seconds: number; down_until: string };
      return [`link ${a.link_id} down for ${a.seconds} s (until ${shortTime(a.down_until)})`];
    },
  },
};

import type { KekStatus } from '../lifecycle/kek-rotation.js';
import { noPositionals, reasonOf, runAdminCommand, shortTime, TARGET_HELP, type AdminCommand, type Out } from './command.js';
import { table } from './table.js';

export const KEK_USAGE = `usage: kms kek <command> [options]

  status                      the KEK versions: current, in the HSM or destroyed, what each still seals
  rotate [--reason TEXT]      create a new KEK version in the HSM and seal new material under it at once; the
                              re-wrap moves the rest in the background, then the old version is destroyed in the
                              HSM (kms kek status shows the progress)

${TARGET_HELP}`;

/** `kms kek …`: KEK rotation over the admin API. Returns the exit status. */
export function kekCommand(args: string[], out: Out, err: Out): Promise<number> {
  return runAdminCommand('kek', KEK_USAGE, COMMANDS, args, out, err);
}

function lines(s: KekStatus): string[] {
  return [
    ...table(
      ['VERSION', 'STATE', 'CHUNKS', 'RELAYED KEYS', 'SIGNING KEYS', 'CREATED', 'DESTROYED'],
      s.versions.map((v) => [
        String(v.version),
        v.version === s.current ? 'current' : v.in_hsm ? 'old (in the HSM)' : 'destroyed',
        String(v.chunks),
        String(v.keys),
        String(v.signing_keys),
        v.created_at ? shortTime(v.created_at) : '-',
        v.destroyed_at ? shortTime(v.destroyed_at) : '-',
      ]),
    ),
    '',
    s.rewrap_pending > 0 ? `re-wrap: ${s.rewrap_pending} row(s) still under an older version` : 're-wrap: nothing left under an older version',
  ];
}

function noArguments(call: AdminCommand['call']): AdminCommand['call'] {
  return (client, values, positionals) => {
    noPositionals(positionals);
    return call(client, values, positionals);
  };
}

const COMMANDS: Record<string, AdminCommand> = {
  status: { options: {}, call: noArguments((client) => client.call('GET', '/admin/v1/kek')), show: (a) => lines(a as KekStatus) },
  rotate: {
    options: { reason: { type: 'string' } },
    call: noArguments((client, values) => client.call('POST', '/admin/v1/kek/rotate', reasonOf(values))),
    show: (a) => [`rotated: new material is sealed under version ${(a as KekStatus).current}`, '', ...lines(a as KekStatus)],
  },
};

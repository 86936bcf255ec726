import type { TlsView } from '../tls-rotation.js';
import { noPositionals, reasonOf, runAdminCommand, shortTime, TARGET_HELP, type AdminCommand, type Out } from './command.js';
import { table } from './table.js';

export const TLS_USAGE = `usage: kms tls <command> [options]

  show                        the TLS material in force: server certificate, CAs, CRLs
  reload [--reason TEXT]      read the server certificate and key, the CA bundle and the CRLs again from the files
                              the config names (as SIGHUP does): new connections use them at once, open ones are
                              checked on their next request (a revoked client certificate is refused); a bad file
                              refuses the reload and changes nothing

${TARGET_HELP}`;

/** `kms tls …`: certificate rotation over the admin API. Returns the exit status. */
export function tlsCommand(args: string[], out: Out, err: Out): Promise<number> {
  return runAdminCommand('tls', TLS_USAGE, COMMANDS, args, out, err);
}

function lines(v: TlsView): string[] {
  const s = v.server_certificate;
  return [
    `server certificate  ${s.subject}  valid until ${shortTime(s.not_after)}`,
    `                    sha256 ${s.sha256}`,
    '',
    ...table(['CA', 'VALID UNTIL', 'SHA256'], v.trust.cas.map((c) => [c.subject, shortTime(c.not_after), c.sha256])),
    '',
    ...(v.trust.crls.length
      ? table(['CRL ISSUER', 'REVOKED', 'THIS UPDATE', 'NEXT UPDATE'], v.trust.crls.map((c) => [c.issuer, String(c.revoked), shortTime(c.this_update), c.next_update ? shortTime(c.next_update) : '-']))
      : ['no CRL (config tls.crl)']),
    '',
    `reloads since start: ${v.trust.reloads}${v.reloaded_at ? `, the last at ${shortTime(v.reloaded_at)}` : ''}`,
  ];
}

const COMMANDS: Record<string, AdminCommand> = {
  show: {
    options: {},
    call: (client, _values, positionals) => {
      noPositionals(positionals);
      return client.call('GET', '/admin/v1/tls');
    },
    show: (answer) => lines(answer as TlsView),
  },
  reload: {
    options: { reason: { type: 'string' } },
    call: (client, values, positionals) => {
      noPositionals(positionals);
      return client.call('POST', '/admin/v1/tls/reload', reasonOf(values));
    },
    show: (answer) => ['reloaded', '', ...lines(answer as TlsView)],
  },
};

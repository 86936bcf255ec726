import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile, readSecret } from '../config/load.js';
import { createLogger, type Logger } from '../log.js';
// Each command loads what it needs when it runs: an auditor's `kms audit verify` on a laptop should not load the
// server, the HSM bindings and the database drivers first (about a second on the 2-core VM).

const USAGE = `usage: kms <command> [options]

  demo                      run a self-contained demo network of three KMEs (embedded PostgreSQL, hsm-mock,
                            dev PKI, simulated links)
                            env: KMS_DEMO_DIR (default ./.kms-demo), KMS_DEMO_PORT (default 8443, and the next two)
  serve --config FILE       run a KME from a config file (secrets from the environment, see README)
  migrate --config FILE     apply database migrations and exit (with database.app_role: as the owner, from
                            KMS_MIGRATE_DATABASE_URL, and grant the KME's role only what it needs)
  sim --config FILE         run simulated QKD device pairs that serve ETSI 014 to KMEs (docs/devices.md)
  agent --config FILE       run a site's consumer agent: keys its encryptors (strongSwan, MACsec, a script) in
                            step with the peer agents (docs/agent.md)
  agent status [--config FILE] [--json]   each binding's key_ID, its age, the next rotation, the last error
  pki <init|issue-kme|issue-sae|issue-auditor|issue-operator> …   a CA and certificates (kms pki help)
  audit <keys|checkpoint|export|verify> …   the custody log for auditors (kms audit help)
  sae <list|show|enroll|suspend|resume|revoke> …   SAEs, over the admin API (kms sae help)
  key <show|suspend|resume|revoke|destroy|received|holders> …   keys, over the admin API (kms key help)
  pool <list|show|suspend|resume|drain|schedule-deletion|cancel-deletion> …   pools, over the admin API (kms pool help)
  policy <list|show|set|delete> …   policies per SAE pair, over the admin API (kms policy help)
  kek <status|rotate> …     the key-encryption key's versions; rotate it without downtime (kms kek help)
  tls <show|reload> …       the TLS material in force; reload it from its files (as SIGHUP does)
`;

type TextCommand = (args: string[], out: (line: string) => void, err: (line: string) => void) => Promise<number>;

/** The commands that print to stdout and stderr and return: the admin API's nouns and the auditor's tools, each loaded when used. */
const TEXT_COMMANDS: Record<'sae' | 'key' | 'pool' | 'policy' | 'tls' | 'kek' | 'audit', () => Promise<TextCommand>> = {
  sae: async () => (await import('../admin/sae-cli.js')).saeCommand,
  key: async () => (await import('../admin/key-cli.js')).keyCommand,
  pool: async () => (await import('../admin/pool-cli.js')).poolCommand,
  policy: async () => (await import('../admin/policy-cli.js')).policyCommand,
  tls: async () => (await import('../admin/tls-cli.js')).tlsCommand,
  kek: async () => (await import('../admin/kek-cli.js')).kekCommand,
  audit: async () => (await import('../audit/cli.js')).auditCommand,
};

/** Entry point: returns the process exit code (or never returns for long-running commands). */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const log = createLogger();
  switch (command) {
    case 'demo': {
      const { runDemo } = await import('./demo.js');
      const demo = await runDemo(log);
      return untilSignal(log, demo.close, demo.reloadTls);
    }
    case 'serve': {
      const config = loadConfigFile(configPath(rest));
      const { startKms } = await import('../server.js');
      const kms = await startKms(config, { log, databaseUrl: databaseUrl(config.database.url_env) });
      return untilSignal(log, kms.close, kms.reloadTls);
    }
    case 'migrate': {
      const config = loadConfigFile(configPath(rest));
      const role = config.database.app_role;
      const [{ migrate }, { grantAppRoleAt }] = await Promise.all([import('../store/migrate.js'), import('../store/app-role.js')]);
      // With an app role, the owner migrates (its URL in migrate_url_env) and grants the KME's role what it may do.
      await migrate(databaseUrl(role ? config.database.migrate_url_env : config.database.url_env), log);
      if (role) await grantAppRoleAt(databaseUrl(config.database.migrate_url_env), role, log);
      return 0;
    }
    case 'sim':
      return (await import('./sim.js')).simCommand(rest, log);
    case 'agent':
      return (await import('../consumers/agent/cli.js')).agentCommand(rest, log, (line) => process.stdout.write(line + '\n'));
    case 'pki':
      return (await import('../pki/cli.js')).pkiCommand(rest, (line) => process.stdout.write(line + '\n'));
    case 'sae':
    case 'key':
    case 'pool':
    case 'policy':
    case 'tls':
    case 'kek':
    case 'audit': {
      const run = await TEXT_COMMANDS[command]();
      return run(rest, (line) => process.stdout.write(line + '\n'), (line) => process.stderr.write(line + '\n'));
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`kms: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return 2;
  }
}

function configPath(args: string[]): string {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  if (!values.config) throw new ConfigError('--config FILE is required');
  return values.config;
}

function databaseUrl(envName: string): string {
  return readSecret('the database URL', envName);
}

/**
 * Keeps a server running until SIGINT/SIGTERM, then closes it gracefully. SIGHUP reloads its TLS material (server
 * certificate, CA bundle, CRLs) from their files; a bad file is logged and changes nothing.
 */
function untilSignal(log: Logger, close: () => Promise<void>, reloadTls: (why: string) => Promise<unknown>): Promise<number> {
  const hangup = () => {
    reloadTls('SIGHUP').catch((err: Error) => log.error({ err: { message: err.message } }, 'SIGHUP: TLS material not reloaded'));
  };
  process.on('SIGHUP', hangup);
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGHUP', hangup);
      log.info({ signal }, 'shutting down');
      close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

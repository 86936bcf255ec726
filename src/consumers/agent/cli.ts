import { parseArgs } from 'node:util';
import { ConfigError } from '../../config/load.js';
import type { Logger } from '../../log.js';
import { loadAgentConfig } from './config.js';

const USAGE = `usage: kms agent --config FILE            run the consumer agent of this site (until SIGINT/SIGTERM)
       kms agent status [--config FILE] [--json]   each binding's key_ID, its age, the next rotation, the last error

The agent is an SAE towards its KME and keys the encryptors its bindings name, in step with the peer agent at the
far end of each (docs/agent.md). --config defaults to $KMS_AGENT_CONFIG. Status reads the state directory, so it
answers for a stopped agent too.
`;

/** `kms agent …`: returns the exit code (the running agent only after a signal). */
export async function agentCommand(args: string[], log: Logger, out: (line: string) => void): Promise<number> {
  const status = args[0] === 'status';
  let values: { config?: string; json?: boolean; help?: boolean };
  try {
    const options = { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;
    ({ values } = parseArgs({ args: status ? args.slice(1) : args, options, strict: true }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${USAGE}`);
  }
  if (values.help || args[0] === 'help') {
    out(USAGE.trimEnd());
    return 0;
  }
  const file = values.config ?? process.env.KMS_AGENT_CONFIG;
  if (!file) throw new ConfigError(`--config FILE is required (or KMS_AGENT_CONFIG)\n\n${USAGE}`);
  const config = loadAgentConfig(file);
  if (status) {
    const { agentStatus, statusLines } = await import('./status.js');
    const report = agentStatus(config);
    if (values.json) out(JSON.stringify(report, null, 2));
    else statusLines(report).forEach((line) => out(line));
    return 0;
  }
  const { startAgent } = await import('./agent.js');
  const agent = await startAgent(config, log);
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'consumer agent shutting down');
      agent.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

import { parseArgs } from 'node:util';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log.js';
import { loadSimConfig } from '../sim/config.js';
import { startDeviceSimulator } from '../sim/device-server.js';

const USAGE = `usage: kms sim --config FILE

Runs simulated QKD device pairs that serve the device side of ETSI GS QKD 014 to the KMEs at both ends of each
link (source type "etsi014"). Keys are OS randomness, not quantum keys: for tests and demos only. See docs/devices.md.
`;

/** `kms sim --config FILE`: runs until SIGINT/SIGTERM, then closes and returns the exit code. */
export async function simCommand(args: string[], log: Logger): Promise<number> {
  let values: { config?: string; help?: boolean };
  try {
    const options = { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } } as const;
    ({ values } = parseArgs({ args, options, strict: true }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.config) throw new ConfigError('--config FILE is required');
  const sim = await startDeviceSimulator(loadSimConfig(values.config), log);
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'device simulator shutting down');
      sim.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

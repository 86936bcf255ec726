import { ConfigError } from '../config/load.js';
import { main } from './kms.js';

// The process entry point (npm scripts and bin/kms.js): run the command, exit with its code.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    // Operator-facing errors are printed as they are; anything else with its stack, for a bug report.
    process.stderr.write(`kms: ${err instanceof ConfigError ? err.message : (err.stack ?? String(err))}\n`);
    process.exit(1);
  },
);

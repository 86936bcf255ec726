import { pino, type Logger, type LoggerOptions } from 'pino';

/**
 * Paths pino must never print. Key material should never reach a log call in the first place; this is the net
 * under that rule (tests search the captured logs for delivered key bytes). `*.key` covers ETSI key objects and
 * `keys` whole containers, `pin`/`password` the HSM and database secrets in a logged config.
 */
export const REDACT_PATHS = [
  'key',
  '*.key',
  'keys',
  '*.keys',
  'plaintext',
  '*.plaintext',
  'material',
  '*.material',
  'pin',
  '*.pin',
  '*.*.pin',
  'password',
  '*.password',
  'databaseUrl',
  '*.databaseUrl',
  'req.headers.authorization',
];

export function createLogger(opts: LoggerOptions = {}, destination?: pino.DestinationStream): Logger {
  const options: LoggerOptions = {
    level: process.env.KMS_LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...opts,
  };
  return destination ? pino(options, destination) : pino(options);
}

export type { Logger };

import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/log.js';

/** A real KME logger (with its redaction) that keeps every line, for tests that read or search the logs. */
export function capturingLogger(): { log: Logger; text: () => string } {
  const captured: string[] = [];
  const log = createLogger(
    { level: 'debug' },
    new Writable({
      write(chunk, _enc, done) {
        captured.push(String(chunk));
        done();
      },
    }),
  );
  return { log, text: () => captured.join('') };
}

import type pg from 'pg';
import { isConnectionError, type Db } from '../store/db.js';

type QueryFn = (...args: unknown[]) => unknown;

/**
 * Counts every statement that fails on the pool's connections (`qkms_database_errors_total`), and every idle
 * connection the pool loses. Each connection's `query` is wrapped once, when the pool opens it: the wrapper only
 * looks at the outcome (a callback or a promise, as node-postgres offers both), so the cost per statement is one
 * function call, and the statements and their results are untouched.
 */
export function countDatabaseErrors(db: Db, onError: (kind: 'connection' | 'statement') => void): void {
  const kindOf = (err: unknown) => (isConnectionError(err) ? 'connection' : 'statement');
  db.on('error', () => onError('connection'));
  db.on('connect', (client: pg.PoolClient) => {
    const query = client.query as unknown as QueryFn;
    (client as unknown as { query: QueryFn }).query = function (this: unknown, ...args: unknown[]) {
      const last = args.length - 1;
      const callback = args[last];
      if (typeof callback === 'function') {
        args[last] = (err: unknown, ...rest: unknown[]) => {
          if (err) onError(kindOf(err));
          return (callback as QueryFn)(err, ...rest);
        };
        return query.apply(this, args);
      }
      const result = query.apply(this, args) as Promise<unknown> | undefined;
      result?.then?.(undefined, (err: unknown) => onError(kindOf(err)));
      return result;
    };
  });
}

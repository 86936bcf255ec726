import type { Registry } from 'prom-client';
import { HsmUnavailableError, IntegrityError } from '../hsm/key-wrapper.js';
import type { Logger } from '../log.js';
import type { Topology } from '../peers/topology.js';
import type { PolicyBook } from '../policy/policy-book.js';
import type { Db } from '../store/db.js';
import { countDatabaseErrors } from './database-errors.js';
import { registerDatabaseMetrics } from './database-metrics.js';
import { registerLinkMetrics, type LinkMetricsSources } from './link-metrics.js';
import { registerPolicyMetrics } from './policy-metrics.js';
import { createKmeRegistry } from './registry.js';
import { RequestMetrics } from './request-metrics.js';

/**
 * The Prometheus metrics of one KME (docs/observability.md lists them), served by the ops listener at
 * `GET /metrics`. Two kinds:
 * - counted where things happen (`requests`): requests and their latency, keys delivered, refusals, HSM and
 *   database errors — an increment each, nothing more on the request path;
 * - read when Prometheus scrapes (`collectFrom`): link figures and fallback counts from memory, pool levels and the
 *   sealer's lag from the database (one shared read per scrape, 1 s at most).
 * Never key material, never key_IDs: labels are link IDs, SAE and KME IDs, operations, status codes and reasons.
 */
export class KmeMetrics {
  readonly registry: Registry;
  readonly requests: RequestMetrics;

  constructor(kmeId: string) {
    this.registry = createKmeRegistry(kmeId);
    this.requests = new RequestMetrics(this.registry);
  }

  /** Counts the failed statements of this pool's connections. Call before the pool's first query. */
  watchDatabase(db: Db): void {
    countDatabaseErrors(db, (kind) => this.requests.databaseError(kind));
  }

  /** For SwappableKeyWrapper's `onError`: counts a failed HSM call by kind. */
  readonly hsmError = (operation: 'encrypt' | 'decrypt', err: unknown): void =>
    this.requests.hsmError(operation, err instanceof HsmUnavailableError ? 'unavailable' : err instanceof IntegrityError ? 'integrity' : 'other');

  /** For KeyService's `delivered`. */
  readonly keysDelivered = (operation: 'enc_keys' | 'dec_keys', master: string, slave: string, keys: number): void =>
    this.requests.keysDelivered(operation, master, slave, keys);

  /** Registers the figures read at scrape time. Once, when the KME's parts exist. */
  collectFrom(deps: LinkMetricsSources & { db: Pick<Db, 'query'>; log: Logger; topology: Topology; policies: Pick<PolicyBook, 'all'> }): void {
    registerLinkMetrics(this.registry, deps);
    registerPolicyMetrics(this.registry, deps);
    registerDatabaseMetrics(this.registry, deps);
  }
}

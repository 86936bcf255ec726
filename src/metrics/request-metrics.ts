import { Counter, Histogram, type Registry } from 'prom-client';
import type { KmsError } from '../errors.js';
import { refusalReason } from './refusal-reasons.js';

/** The `operation` label of request metrics: one per API, the ETSI 014 calls apart. */
export type MetricOperation = 'status' | 'enc_keys' | 'dec_keys' | 'peer' | 'audit' | 'admin' | 'other';

/** Seconds. From a cached answer (~1 ms) to the request deadline (5 s by default) and past it. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The metrics counted as things happen, on the request path: each call is an increment or an observation on a
 * label set looked up once and cached (no database, no I/O, no allocation after the first call per label set).
 * Labels are only ever from bounded sets: operations, status codes, reasons, and SAE/KME IDs that the registry knows
 * (authenticated callers, or the SAE IDs a delivery was made for) — never key_IDs, never anything a client typed
 * that the KME did not check.
 */
export class RequestMetrics {
  private readonly duration: Histogram<'operation' | 'code'>;
  private readonly delivered: Counter<'operation' | 'master_sae' | 'slave_sae'>;
  private readonly refusals: Counter<'operation' | 'caller' | 'reason'>;
  private readonly hsmErrors: Counter<'operation' | 'kind'>;
  private readonly dbErrors: Counter<'kind'>;
  private readonly children = new Map<string, { observe(v: number): void } | { inc(v?: number): void }>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.duration = new Histogram({
      name: 'qkms_http_request_duration_seconds',
      help: 'Time from a request arriving at the API listener to its answer being written, by operation and HTTP status code. Counts equal requests answered.',
      labelNames: ['operation', 'code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.delivered = new Counter({
      name: 'qkms_keys_delivered_total',
      help: 'Keys handed to SAEs: enc_keys counts keys given to the master (once per slave of the request, so per pair), dec_keys keys given to a slave.',
      labelNames: ['operation', 'master_sae', 'slave_sae'],
      registers,
    });
    this.refusals = new Counter({
      name: 'qkms_refusals_total',
      help: 'Requests answered with an error (4xx refused, 503 failed), by operation, caller (sae:ID, kme:ID, operator:ID, auditor:ID or anonymous) and reason.',
      labelNames: ['operation', 'caller', 'reason'],
      registers,
    });
    this.hsmErrors = new Counter({
      name: 'qkms_hsm_errors_total',
      help: 'Calls to the HSM (key-encryption key) that failed: kind unavailable (no answer, session lost), integrity (a ciphertext did not open), other.',
      labelNames: ['operation', 'kind'],
      registers,
    });
    this.dbErrors = new Counter({
      name: 'qkms_database_errors_total',
      help: 'Database statements that failed: kind connection (refused, lost, timed out) or statement (the server refused the statement).',
      labelNames: ['kind'],
      registers,
    });
  }

  /** A request was answered `seconds` after it arrived. */
  request(operation: MetricOperation, code: number, seconds: number): void {
    const key = `d${operation}${code}`;
    let child = this.children.get(key) as { observe(v: number): void } | undefined;
    if (!child) this.children.set(key, (child = this.duration.labels(operation, String(code))));
    child.observe(seconds);
  }

  /** `keys` keys of the pair were handed out by enc_keys (to the master) or dec_keys (to the slave). */
  keysDelivered(operation: 'enc_keys' | 'dec_keys', master: string, slave: string, keys: number): void {
    this.counter(`k${operation}\0${master}\0${slave}`, () => this.delivered.labels(operation, master, slave)).inc(keys);
  }

  /** A request got an error answer; `caller` is the authenticated principal (`sae:…`) or `anonymous`. */
  refused(operation: MetricOperation, caller: string, error: Pick<KmsError, 'statusCode' | 'message'>): void {
    const reason = refusalReason(error);
    this.counter(`r${operation}\0${caller}\0${reason}`, () => this.refusals.labels(operation, caller, reason)).inc();
  }

  hsmError(operation: 'encrypt' | 'decrypt', kind: 'unavailable' | 'integrity' | 'other'): void {
    this.hsmErrors.labels(operation, kind).inc();
  }

  databaseError(kind: 'connection' | 'statement'): void {
    this.dbErrors.labels(kind).inc();
  }

  private counter(key: string, make: () => { inc(v?: number): void }): { inc(v?: number): void } {
    let child = this.children.get(key) as { inc(v?: number): void } | undefined;
    if (!child) this.children.set(key, (child = make()));
    return child;
  }
}

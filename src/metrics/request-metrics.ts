import type { Registry } from 'prom-client';
import type { KmsError } from '../errors.js';
import { LocalCounter, LocalHistogram } from './local-metrics.js';
import { refusalReason } from './refusal-reasons.js';

/** The `operation` label of request metrics: one per API, the ETSI 014 calls apart. */
export type MetricOperation = 'status' | 'enc_keys' | 'dec_keys' | 'peer' | 'audit' | 'admin' | 'other';

/** Seconds. From a cached answer (~1 ms) to the request deadline (5 s by default) and past it. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The metrics counted as things happen, on the request path: each call is an addition on a label set found in a
 * Map (src/metrics/local-metrics.ts; no database, no I/O; prom-client sees the totals at scrape time).
 * Labels are only ever from bounded sets: operations, status codes, reasons, and SAE/KME IDs that the registry knows
 * (authenticated callers, or the SAE IDs a delivery was made for) — never key_IDs, never anything a client typed
 * that the KME did not check.
 */
export class RequestMetrics {
  private readonly duration: LocalHistogram;
  private readonly delivered: LocalCounter;
  private readonly refusals: LocalCounter;
  private readonly hsmErrors: LocalCounter;
  private readonly dbErrors: LocalCounter;

  constructor(registry: Registry) {
    this.duration = new LocalHistogram(registry, {
      name: 'qkms_http_request_duration_seconds',
      help: 'Time from a request arriving at the API listener to its answer being written, by operation and HTTP status code. Counts equal requests answered.',
      labelNames: ['operation', 'code'],
      buckets: LATENCY_BUCKETS,
    });
    this.delivered = new LocalCounter(registry, {
      name: 'qkms_keys_delivered_total',
      help: 'Keys handed to SAEs: enc_keys counts keys given to the master (once per slave of the request, so per pair), dec_keys keys given to a slave.',
      labelNames: ['operation', 'master_sae', 'slave_sae'],
    });
    this.refusals = new LocalCounter(registry, {
      name: 'qkms_refusals_total',
      help: 'Requests answered with an error (4xx refused, 503 failed), by operation, caller (sae:ID, kme:ID, operator:ID, auditor:ID or anonymous) and reason.',
      labelNames: ['operation', 'caller', 'reason'],
    });
    this.hsmErrors = new LocalCounter(registry, {
      name: 'qkms_hsm_errors_total',
      help: 'Calls to the HSM (key-encryption key) that failed: kind unavailable (no answer, session lost), integrity (a ciphertext did not open), other.',
      labelNames: ['operation', 'kind'],
    });
    this.dbErrors = new LocalCounter(registry, {
      name: 'qkms_database_errors_total',
      help: 'Database statements that failed: kind connection (refused, lost, timed out) or statement (the server refused the statement).',
      labelNames: ['kind'],
    });
  }

  /** A request was answered `seconds` after it arrived. */
  request(operation: MetricOperation, code: number, seconds: number): void {
    this.duration.observe(seconds, operation, CODES[code] ?? String(code));
  }

  /** `keys` keys of the pair were handed out by enc_keys (to the master) or dec_keys (to the slave). */
  keysDelivered(operation: 'enc_keys' | 'dec_keys', master: string, slave: string, keys: number): void {
    this.delivered.inc(keys, operation, master, slave);
  }

  /** A request got an error answer; `caller` is the authenticated principal (`sae:…`) or `anonymous`. */
  refused(operation: MetricOperation, caller: string, error: Pick<KmsError, 'statusCode' | 'message'>): void {
    this.refusals.inc(1, operation, caller, refusalReason(error));
  }

  hsmError(operation: 'encrypt' | 'decrypt', kind: 'unavailable' | 'integrity' | 'other'): void {
    this.hsmErrors.inc(1, operation, kind);
  }

  databaseError(kind: 'connection' | 'statement'): void {
    this.dbErrors.inc(1, kind);
  }
}

/** The status codes the API answers with, as label values made once. */
const CODES: Record<number, string> = Object.fromEntries([200, 400, 401, 404, 405, 409, 413, 415, 503].map((c) => [c, String(c)]));

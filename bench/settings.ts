// The benchmark's knobs, read once from the environment (all optional; see the header of run.ts).
const num = (name: string, def: number) => (process.env[name] ? Number(process.env[name]) : def);

export const ADMIN_URL = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
export const SECONDS = num('BENCH_SECONDS', 10);
export const WARMUP = 2;
export const CONNECTIONS = 32;
export const ALL_PHASES = 'abcdefkslrghijv';
export const PHASES = new Set((process.env.BENCH_PHASES ?? ALL_PHASES).split(''));
export const SINGLE_PHASES = 'abcdefksl';
/** The phases that run on the measuring KME restarted after filling (k and l restart it their own way). */
export const MEASURING_PHASES = 'abcdef';
export const NETWORK_PHASES = 'ghij';
/** Phase r: two replicas of the single KME (replica-phase.ts), a stage of its own on a database of its own. */
export const REPLICA_PHASES = 'r';
export const FILL_TARGET = num('BENCH_FILL', 700_000);
export const FILL_SECONDS = num('BENCH_FILL_SECONDS', 75);
export const FILL_BPS = 200e6; // the pool-filling KME: ~780k blocks/s offered, far more than ingest can take
export const LINK_BPS = num('BENCH_LINK_BPS', 1e6); // while measuring: a fast real QKD link (~3,900 keys of 256 bits/s)
export const MAX_KEY_COUNT = 1_500_000;
export const DB_POOL = process.env.BENCH_DB_POOL ? Number(process.env.BENCH_DB_POOL) : undefined;
export const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
/** Extra Node options for every KME process (not the reference server, not the load generator). */
export const KME_NODE_ARGS = (process.env.BENCH_KME_NODE_ARGS ?? '').split(' ').filter(Boolean);
export const ANALYZE = process.env.BENCH_ANALYZE === '1';
/** A file each paced run appends its requests' due times and latencies to (bench/load.ts); none: no trace. */
export const TRACE_FILE = process.env.BENCH_TRACE || undefined;
export const FRESH_WORKERS = 16;
export const FIXED_RATE = 500;

/**
 * Phases k and l: the link rate while the KME ingests at full speed. The target is 128 Mbit/s (500,000 keys of 256
 * bits per second); the simulator offers far more, so that what is measured is what the KME takes, not what the link
 * gives.
 */
export const INGEST_BPS = num('BENCH_INGEST_BPS', 400e6);
export const INGEST_TARGET_BPS = 128e6;
/**
 * The ingesting KME's max_blocks_per_batch in k and in l's turnover: the KME's own default unless
 * BENCH_INGEST_BATCH says otherwise (elsewhere the bench keeps its 2000: the other figures stay comparable). A bench
 * that capped the batch would measure its own config, not the KME.
 */
export const INGEST_BATCH: number | null = process.env.BENCH_INGEST_BATCH ? Number(process.env.BENCH_INGEST_BATCH) : null;
/** Phase l: keys delivered (128 per request, at full speed, while ingest refills) before the second measurement. */
export const TURNOVER = num('BENCH_TURNOVER', 2_000_000);
/** Phase l: at most this long for the turnover; past it the phase measures what turned over by then, and says so. */
export const TURNOVER_SECONDS = num('BENCH_TURNOVER_SECONDS', 900);
/** Phase l: its own pool's cap, so the pool is refilled to the same size before both of its measurements. */
export const TURNOVER_POOL = num('BENCH_TURNOVER_POOL', 200_000);
/** Phase r: keys its pool is filled with (its four KME runs, enc_keys and dec_keys, share them). */
export const REPLICA_FILL = num('BENCH_REPLICA_FILL', 250_000);
/** Phase r: the Redis the two replicas coordinate through (a key prefix of the run's own keeps runs apart). */
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** RSS of every KME, sampled this often through the whole run. */
export const RSS_INTERVAL_MS = 1000;
export const RSS_GOAL_MIB = 300;

/** Network part: keys KME_A must own on link A-B (BENCH_FILL when only that is given, so a smoke run stays short). */
export const NET_FILL_TARGET = num('BENCH_NET_FILL', process.env.BENCH_FILL ? FILL_TARGET : 300_000);
export const NET_FILL_SECONDS = num('BENCH_NET_FILL_SECONDS', process.env.BENCH_FILL_SECONDS ? FILL_SECONDS : 90);

export const AUTOCANNON_RPS = `median of ${SECONDS} one-second samples (autocannon, ${CONNECTIONS} keep-alive connections)`;
export const ENC1 = '/api/v1/keys/SAE_B/enc_keys?number=1&size=256';

/** Phase v: custody events in the bundle `kms audit verify` is timed on (the target: 1M in ≤ 10 s). */
export const VERIFY_EVENTS = num('BENCH_VERIFY_EVENTS', 1_000_000);

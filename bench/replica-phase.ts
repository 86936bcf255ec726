// Phase r: two replicas of one KME behind the same clients, beside one process alone. KME_B on a database of its
// own: replica 1 fills the pool from the fast link (as the single-KME stage does), then both replicas start with the
// measuring link — the same kme_id, database, SoftHSM2 token and KEK, one Redis for coordination (under a key prefix
// of this run's own). The link's ingest runs on whichever replica holds its leader lock; the other only serves.
// Phase b's load (GET enc_keys, one 256-bit key, 32 keep-alive connections) then runs three times:
//   one process  — replica 1 alone (replica 2 up and idle);
//   two replicas — the same 32 connections alternating between the two (autocannon gives connection i the URL
//                  i mod 2: 16 each, one load generator, one set of one-second samples);
//   reference    — the bare server, as in every phase.
// Then rd: phase d's load (dec_keys as SAE_B, each key_ID once, fetched at replica 1) the same three ways.
// On a machine with few cores the two replicas share the cores one process had (with PostgreSQL and the load
// generator): the row says what a second replica costs or gives there, not what it gives on a machine of its own.
//
// Run time: a fill of BENCH_REPLICA_FILL keys (seconds), three KME starts, 6 × (WARMUP + SECONDS) s of measurement.
import { randomBytes } from 'node:crypto';
import type { SoftHsmToken } from '../hsm-mock/softhsm-token.js';
import type { DemoPki } from '../src/pki/dev-pki.js';
import { tlsFor } from './client.js';
import { KmeHost } from './kme-host.js';
import { decKeysRun, fetchKeyIds, fillPool, measureInto } from './measure.js';
import type { Phase } from './report.js';
import { AUTOCANNON_RPS, CPU_PROF, ENC1, FILL_BPS, FILL_SECONDS, LINK_BPS, MAX_KEY_COUNT, REDIS_URL, REPLICA_FILL } from './settings.js';
import { identity } from './setup.js';
import { enter, leave } from './timeline.js';

/** Keys one KME run may draw (12 s at ~4,000 req/s); r and rd each have two such runs. */
const RUN_KEYS = 50_000;

export interface ReplicaContext {
  root: string;
  pki: DemoPki;
  token: SoftHsmToken;
  referenceUrl: string;
}

const n = (x: number) => x.toLocaleString('en-US');

/** Runs phases r and rd; returns the two replicas' hosts (their logs, memory and profiles are the bench's). */
export async function replicaPhase(ctx: ReplicaContext, done: (p: Phase) => void): Promise<KmeHost[]> {
  const keyPrefix = `qkms-bench-${randomBytes(4).toString('hex')}`;
  const replica = (name: string) => ({ name, redisUrl: REDIS_URL, keyPrefix });
  const r1 = await KmeHost.create(ctx.root, ctx.pki, ctx.token, { profile: CPU_PROF, replica: replica('KME r1') });
  const r2 = await KmeHost.create(ctx.root, ctx.pki, ctx.token, { profile: CPU_PROF, replicaOf: r1, replica: replica('KME r2') });
  console.log(`\nphase r: two replicas of KME_B on database ${r1.databaseName}, Redis ${REDIS_URL} (keys ${keyPrefix}:…)`);

  await r1.start({ rateBps: FILL_BPS, maxKeyCount: MAX_KEY_COUNT }, 'r fill');
  await fillPool(r1.stored, REPLICA_FILL, FILL_SECONDS, "phase r's pool");
  await r1.stop();
  const link = { rateBps: LINK_BPS, maxKeyCount: MAX_KEY_COUNT };
  await r1.start(link, 'r');
  await r2.start(link, 'r'); // after replica 1: the KEK on the token is found, not created twice
  try {
    const tlsA = tlsFor(r1.A);
    const both = [r1.url, r2.url];

    const stored = await r1.stored();
    const enc: Phase = {
      id: 'r',
      title: 'GET enc_keys?number=1 (256 bits): one replica alone, then two replicas behind the same clients',
      keysPerRequest: 1,
      rpsMethod: AUTOCANNON_RPS,
      notes: [],
    };
    const encKeys = Math.min(RUN_KEYS, Math.floor(stored / 4)); // two runs here, two in rd
    console.log(`\n[r] pool ${n(stored)} keys; each KME run may use ${n(encKeys)}`);
    await measureInto(enc, 'kme', { url: r1.url, tls: tlsA, path: ENC1 }, encKeys);
    await measureInto(enc, 'replicas', { url: both, tls: tlsA, path: ENC1 }, encKeys);
    await measureInto(enc, 'reference', { url: ctx.referenceUrl, tls: tlsA, path: ENC1 });
    done(enc);

    enter('rd');
    const dec: Phase = {
      id: 'rd',
      title: 'GET dec_keys?key_ID=… (each ID once, as SAE_B): one replica alone, then two replicas behind the same clients',
      keysPerRequest: 1,
      rpsMethod: AUTOCANNON_RPS,
      notes: [],
    };
    const ids = await fetchKeyIds(r1.url, r1.A, Math.min(2 * RUN_KEYS, await r1.stored()), { slave: 'SAE_B', label: 'rd' });
    await decKeysRun(dec, ids, { urls: { kme: r1.url, replicas: both, reference: ctx.referenceUrl }, tls: tlsFor(identity(ctx.pki, 'SAE_B')), master: 'SAE_A' });
    done(dec);
  } finally {
    await r2.stop(); // before reading their logs and profiles: complete only once they have exited
    await r1.stop();
    leave();
  }
  return [r1, r2];
}

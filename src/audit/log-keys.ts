import { randomBytes } from 'node:crypto';
import { IntegrityError, type KeyWrapper } from '../hsm/key-wrapper.js';
import type { SigningKey } from '../hsm/signing-key.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { mlDsa65KeyPair, type MlDsaKeyPair } from './ml-dsa-note.js';
import { MlDsaThread } from './ml-dsa-thread.js';
import { ecdsaLogSigner, mlDsaLogSigner, type LogSigner } from './vkeys.js';

interface LogKeysOptions {
  db: Db;
  wrapper: KeyWrapper;
  signingKey: SigningKey;
  name: string;
  log: Logger;
}

/**
 * The keys that sign the custody log's checkpoints: the HSM's ECDSA P-256 key and, beside it, an ML-DSA-65 key. No
 * HSM here holds ML-DSA keys, so its 32-byte seed (FIPS 204 key generation is deterministic from it) is kept sealed
 * under the KEK in `audit_signing_key`, as key material is, bound to its verifier key. Every key that ever signed is
 * registered there, so that `kms audit keys` and the export bundles list them all.
 *
 * A seed that no longer unseals (hsm-mock: a new software KEK on every start) is replaced by a new key, and the log
 * says so: auditors then pin one more key.
 *
 * Returns the classical signer and the post-quantum key pair (LogKeys signs with it on a thread of its own).
 */
async function openLogKeys(opts: LogKeysOptions): Promise<{ classical: LogSigner; pq: MlDsaKeyPair }> {
  const { db, wrapper, name, log } = opts;
  const classical = ecdsaLogSigner(name, opts.signingKey.publicKey, (m) => opts.signingKey.sign(m));
  await db.query(`INSERT INTO audit_signing_key (vkey, algorithm, held_in) VALUES ($1, 'ecdsa-p256', 'hsm') ON CONFLICT DO NOTHING`, [classical.vkey]);
  return { classical, pq: await postQuantumKeys(db, wrapper, name, log) };
}

/**
 * The log's signers, opened on first use (so only a leader, or a witness asked to cosign, touches them) and shared by
 * the sealer and the witness. A failed opening (the HSM unavailable) is tried again on the next use.
 */
export class LogKeys {
  private opening: Promise<LogSigner[]> | undefined;
  private thread: MlDsaThread | undefined;

  constructor(private readonly o: LogKeysOptions) {}

  /** The name the keys sign under (the log's origin). */
  get name(): string {
    return this.o.name;
  }

  /** The ML-DSA-65 signatures are made on a thread of their own (MlDsaThread), off the request loop. */
  signers(): Promise<LogSigner[]> {
    this.opening ??= openLogKeys(this.o).then(
      ({ classical, pq }) => {
        const thread = (this.thread = new MlDsaThread(pq.secretKey));
        return [classical, mlDsaLogSigner(this.o.name, pq, (m) => thread.sign(m))];
      },
      (err: unknown) => {
        this.opening = undefined;
        throw err;
      },
    );
    return this.opening;
  }

  /** Ends the ML-DSA signing thread: signatures asked for after close() fail. */
  async close(): Promise<void> {
    await this.thread?.close();
  }
}

const aadOf = (vkey: string) => Buffer.from(`qkms custody signing key\n${vkey}`, 'utf8');

async function postQuantumKeys(db: Db, wrapper: KeyWrapper, name: string, log: Logger): Promise<MlDsaKeyPair> {
  const { rows } = await db.query<{ vkey: string; sealed_secret: Buffer }>(
    // The newest seal of the seed: the KEK re-wrap adds seals under newer versions (migration 0011).
    `SELECT k.vkey, COALESCE((SELECT s.sealed_secret FROM audit_signing_key_seal s WHERE s.vkey = k.vkey ORDER BY s.kek_version DESC LIMIT 1),
                            k.sealed_secret) AS sealed_secret
       FROM audit_signing_key k
      WHERE k.algorithm = 'ml-dsa-65' AND starts_with(k.vkey, $1) ORDER BY k.created_at DESC LIMIT 1`,
    [`${name}+`],
  );
  const stored = rows[0];
  if (stored) {
    const s = stored.sealed_secret;
    try {
      const seed = await wrapper.decrypt({ kekVersion: s.readInt32BE(0), iv: s.subarray(4, 16), ciphertext: s.subarray(16) }, aadOf(stored.vkey));
      const keys = mlDsa65KeyPair(seed);
      seed.fill(0);
      if (mlDsaLogSigner(name, keys).vkey === stored.vkey) return keys;
      throw new IntegrityError('the unsealed seed gives another key');
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err; // the HSM is unavailable: try again later, keep the key
      log.warn({ key: stored.vkey.split('+', 2).join('+') }, 'the ML-DSA checkpoint key no longer unseals under this KEK; making a new one (auditors must pin it)');
    }
  }
  const seed = randomBytes(32);
  const keys = mlDsa65KeyPair(seed);
  const signer = mlDsaLogSigner(name, keys);
  const sealed = await wrapper.encrypt(seed, aadOf(signer.vkey));
  seed.fill(0);
  const version = Buffer.alloc(4);
  version.writeInt32BE(sealed.kekVersion);
  await db.query(`INSERT INTO audit_signing_key (vkey, algorithm, held_in, sealed_secret) VALUES ($1, 'ml-dsa-65', 'kek', $2)`, [
    signer.vkey,
    Buffer.concat([version, sealed.iv, sealed.ciphertext]),
  ]);
  log.info({ key: signer.vkey.split('+', 2).join('+') }, 'made a new ML-DSA-65 checkpoint signing key (kms audit keys prints it whole)');
  return keys;
}

/** SQL for the KEK version of a sealed seed: its first 4 bytes, big-endian. */
export const sealVersionSql = (column: string) => `('x' || encode(substring(${column} from 1 for 4), 'hex'))::bit(32)::int`;

/** SQL: per key held under the KEK, its newest seal (the one in use). */
export const NEWEST_SEALS_SQL = `SELECT k.vkey, COALESCE((SELECT s.sealed_secret FROM audit_signing_key_seal s WHERE s.vkey = k.vkey ORDER BY s.kek_version DESC LIMIT 1),
                                  k.sealed_secret) AS sealed
    FROM audit_signing_key k WHERE k.held_in = 'kek'`;

/**
 * The KEK re-wrap's part for the custody log's keys (src/lifecycle/kek-rotation.ts): every ML-DSA seed whose newest
 * seal is under an older KEK version than `current` is sealed again under the current one, added to
 * audit_signing_key_seal (append-only: the old seal stays, unusable once its version is destroyed). Returns how many.
 */
export async function resealSeeds(db: Db, wrapper: KeyWrapper, current: number): Promise<number> {
  const { rows } = await db.query<{ vkey: string; sealed: Buffer }>(
    `SELECT vkey, sealed FROM (${NEWEST_SEALS_SQL}) AS newest
      WHERE ${sealVersionSql('sealed')} < $1`,
    [current],
  );
  for (const { vkey, sealed: s } of rows) {
    const seed = await wrapper.decrypt({ kekVersion: s.readInt32BE(0), iv: s.subarray(4, 16), ciphertext: s.subarray(16) }, aadOf(vkey));
    try {
      const again = await wrapper.encrypt(seed, aadOf(vkey));
      const version = Buffer.alloc(4);
      version.writeInt32BE(again.kekVersion);
      await db.query(`INSERT INTO audit_signing_key_seal (vkey, kek_version, sealed_secret) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, [
        vkey,
        again.kekVersion,
        Buffer.concat([version, again.iv, again.ciphertext]),
      ]);
    } finally {
      seed.fill(0);
    }
  }
  return rows.length;
}

/** Every verifier key that ever signed this log's checkpoints, oldest first. */
export async function logVkeys(db: Pick<Db, 'query'>): Promise<string[]> {
  const { rows } = await db.query<{ vkey: string }>(`SELECT vkey FROM audit_signing_key ORDER BY created_at, vkey`);
  return rows.map((r) => r.vkey);
}

// Offline verification of a long custody log: how long `kms audit verify` takes over a bundle of `events` events
// (the issue's target: one million in at most 10 s on the bench machine).
//
// The bundle is SYNTHETIC: producing a million real events through the ETSI API (TLS requests, HSM unwraps, database
// transactions, the sealer) would take far longer than the bench itself, and what is measured here is only the
// verifier, which sees nothing but the file. So the file is written directly, with the very modules the exporter and
// the sealer use — auditBody (canonical event bodies), eventLeafHash/gapLeafHash, Frontier, checkpointText, signNote
// with an ECDSA P-256 signer (node:crypto) and an ML-DSA-65 signer, eventLine/gapLine/checkpointLine/endLine — so the
// verifier does exactly the work it does on a real export: every line parsed, every leaf hashed, every checkpoint's
// root recomputed and both signatures checked, the whole key lifecycle replayed.
//
// The traffic is that of a busy KME on one link: an `ingest` now and then; per master request of 1–2 keys (random
// UUIDs) a deliver_master, later (a few requests may be in flight) the slave's deliver_slave and the destroy that
// follows it; now and then a refused request; a few sequence numbers rolled back (gaps). Actors carry certificate
// fingerprints like Node's fingerprint256. A checkpoint seals every 10,000 leaves, and one seals the tail, as a
// sealer that kept up would.
//
// The bundle is streamed to disk (write stream, waiting on 'drain'), never held whole in memory; the verifier runs as
// a child process (`node bin/kms.js audit verify FILE --keys KEYS --json`), timed by wall clock, start-up included.
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createWriteStream, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUNDLE_FORMAT, checkpointLine, endLine, eventLine, gapLine, type BundleHeader } from '../src/audit/bundle.js';
import { checkpointText } from '../src/audit/checkpoint.js';
import { auditBody, type AuditEvent } from '../src/audit/event.js';
import { eventLeafHash, gapLeafHash } from '../src/audit/leaves.js';
import { Frontier } from '../src/audit/merkle.js';
import { mlDsa65KeyPair } from '../src/audit/ml-dsa-note.js';
import { signNote } from '../src/audit/signed-note.js';
import { ecdsaLogSigner, mlDsaLogSigner } from '../src/audit/vkeys.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ORIGIN = 'qkms/KME_BENCH/custody';
const LINK = 'KME_BENCH-KME_PEER';
/** Leaves per checkpoint (the real sealer seals what settled each second, at most 50,000 at once). */
const LEAVES_PER_SEAL = 10_000;
/** Odds per sequence number of a rolled-back transaction (a gap), of an ingest, of a refused request. */
const GAP_ODDS = 1 / 20_000;
const INGEST_ODDS = 1 / 200;
const REFUSED_ODDS = 1 / 500;
/** Buffered text written at once: big enough to keep write calls few, small enough to keep memory flat. */
const CHUNK_CHARS = 1 << 20;

export interface VerifyPhaseResult {
  events: number;
  bundleBytes: number;
  buildSeconds: number;
  verifySeconds: number;
  /** The verifier's verdict on the bundle (it must be true: the bundle is genuine). */
  ok: boolean;
  problem?: string;
}

const fingerprint = (who: string) =>
  createHash('sha256').update(who).digest('hex').toUpperCase().match(/../g)!.join(':');

/** Writes a synthetic bundle of `events` events and its keys file into `dir`, then times `kms audit verify` on it. */
export async function verifyPhase(opts: { events: number; dir: string }): Promise<VerifyPhaseResult> {
  const file = join(opts.dir, 'custody.jsonl');
  const keysFile = join(opts.dir, 'pinned.vkeys');
  const built = performance.now();
  await writeBundle(file, keysFile, opts.events);
  const buildSeconds = (performance.now() - built) / 1000;
  const bundleBytes = statSync(file).size;

  const started = performance.now();
  const { code, stdout, stderr } = await run(process.execPath, [join(ROOT, 'bin/kms.js'), 'audit', 'verify', file, '--keys', keysFile, '--json']);
  const verifySeconds = (performance.now() - started) / 1000;
  let report: { ok?: boolean; events?: number; problem?: { seq?: number; message?: string } };
  try {
    report = JSON.parse(stdout.trim().split('\n').pop() ?? '');
  } catch {
    return { events: 0, bundleBytes, buildSeconds, verifySeconds, ok: false, problem: `verify exited ${code} without a JSON report: ${stderr.trim().slice(0, 300)}` };
  }
  const problem = report.problem ? `${report.problem.seq !== undefined ? `seq ${report.problem.seq}: ` : ''}${report.problem.message}` : undefined;
  return { events: report.events ?? 0, bundleBytes, buildSeconds, verifySeconds, ok: report.ok === true && code === 0, ...(problem ? { problem } : {}) };
}

async function writeBundle(file: string, keysFile: string, events: number): Promise<void> {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const signers = [ecdsaLogSigner(ORIGIN, spki, async (m) => sign('sha256', m, privateKey)), mlDsaLogSigner(ORIGIN, mlDsa65KeyPair())];
  writeFileSync(keysFile, signers.map((s) => s.vkey).join('\n') + '\n');

  const out = createWriteStream(file);
  let lines: string[] = [];
  let chars = 0;
  const flush = async () => {
    const text = lines.join('\n') + '\n';
    lines = [];
    chars = 0;
    if (!out.write(text)) await once(out, 'drain');
  };
  const put = async (line: string) => {
    lines.push(line);
    chars += line.length;
    if (chars >= CHUNK_CHARS) await flush();
  };

  const header: BundleHeader = {
    type: 'header',
    format: BUNDLE_FORMAT,
    origin: ORIGIN,
    exported_at: new Date().toISOString(),
    vkeys: signers.map((s) => s.vkey),
    start: { size: 0, frontier: '', checkpoint: null },
  };
  await put(JSON.stringify(header));

  const frontier = Frontier.empty();
  let range: Buffer[] = [];
  const counts = { events: 0, gaps: 0, checkpoints: 0 };
  const seal = async () => {
    const note = await signNote(checkpointText({ origin: ORIGIN, size: frontier.size, root: frontier.root() }), signers);
    await put(checkpointLine(frontier.size, Buffer.concat(range), note));
    range = [];
    counts.checkpoints++;
  };
  const leaf = async (h: Buffer) => {
    frontier.append(h);
    range.push(h);
    if (range.length === LEAVES_PER_SEAL) await seal();
  };

  const clock = Date.parse('2025-01-01T00:00:00Z');
  let ms = 0;
  const saeA = { actor: 'sae:SAE_A', actorCert: fingerprint('SAE_A') };
  const saeB = { actor: 'sae:SAE_B', actorCert: fingerprint('SAE_B') };
  const emit = async (e: AuditEvent) => {
    if (Math.random() < GAP_ODDS) {
      const seq = frontier.size + 1;
      await put(gapLine(seq));
      counts.gaps++;
      await leaf(gapLeafHash(seq));
    }
    ms += 1 + Math.floor(Math.random() * 3);
    const body = auditBody({ ...e, at: new Date(clock + ms) });
    await put(eventLine(frontier.size + 1, body));
    counts.events++;
    await leaf(eventLeafHash(body));
  };

  let blockSeq = 0;
  const ingest = () => {
    const blocks = 64;
    const first = blockSeq;
    blockSeq += blocks;
    const detail = { link_id: LINK, first_seq: String(first), last_seq: String(blockSeq - 1), blocks, owned: blocks / 2, device_keys: 4 };
    return emit({ operation: 'ingest', outcome: 'ok', actor: 'kme:KME_BENCH', detail });
  };

  await ingest(); // material first: keys are bound only on a link that ingested before
  const inFlight: string[][] = []; // keys handed to the master, not yet fetched by the slave
  while (counts.events < events) {
    const r = Math.random();
    if (r < INGEST_ODDS) {
      await ingest();
    } else if (r < INGEST_ODDS + REFUSED_ODDS) {
      await emit({ operation: 'deliver_slave', outcome: 'refused', ...saeB, keyIds: [randomUUID()], detail: { status: 400, reason: 'key_ID not known' } });
    } else if (inFlight.length > 0 && (inFlight.length > 8 || Math.random() < 0.5)) {
      const keyIds = inFlight.shift()!;
      await emit({ operation: 'deliver_slave', outcome: 'ok', ...saeB, keyIds, detail: { master: 'SAE_A' } });
      if (counts.events < events) await emit({ operation: 'destroy', outcome: 'ok', ...saeB, keyIds, detail: { reason: 'all slaves served' } });
    } else {
      const keyIds = Math.random() < 0.5 ? [randomUUID()] : [randomUUID(), randomUUID()];
      await emit({ operation: 'deliver_master', outcome: 'ok', ...saeA, keyIds, detail: { link_id: LINK, slaves: ['SAE_B'], size_bits: 256, relayed_to: [] } });
      inFlight.push(keyIds);
    }
  }
  if (range.length > 0) await seal();
  await put(endLine(counts));
  if (lines.length > 0) await flush();
  await new Promise<void>((done, fail) => out.end((e?: Error | null) => (e ? fail(e) : done())));
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr }));
  });
}

// `kms audit …`: the custody log for auditors. `keys`, `checkpoint` and `export` read the KME's database (config
// file, URL from the environment, as `kms serve`); `verify` works offline on a bundle file, with no database.
// Exit codes: 0 ok, 1 verification failed (or the database could not be read), 2 usage or unreadable input.
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { ConfigError, loadConfigFile, readSecret } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { lastSeal } from '../store/seals.js';
import { eachLineOfFile, writeLinesToFile } from './bundle.js';
import { exportBundle } from './export.js';
import { pruneLog } from './prune.js';
import { logVkeys } from './log-keys.js';
import { logOrigin } from './sealer.js';
import { NoteFormatError } from './signed-note.js';
import { BundleVerifier, type VerifyReport } from './verify.js';
import { parseVkey } from './vkeys.js';
import { traceKey, traceLine, type TraceTarget } from './trace.js';

const USAGE = `usage: kms audit <command> [options]

commands:
  keys --config FILE
      print the verifier keys that sign this KME's custody log, one per line: auditors pin these
  checkpoint --config FILE
      print the latest signed checkpoint (keep it: a later verify --trusted-checkpoint proves nothing was rewritten)
  export --config FILE [--out FILE] [--after-size N]
      write the custody log as a bundle (JSON Lines) to FILE or stdout; --after-size starts at that checkpoint
  verify BUNDLE --keys FILE [--witness-keys FILE] [--trusted-checkpoint FILE] [--json]
      verify a bundle offline against the pinned keys in FILE (and the cosignatures of the witnesses whose keys are
      in --witness-keys); exit 0 if it holds, 1 naming the first bad event
  prune --config FILE --archive FILE (--older-than DAYS | --up-to-size N)
      archive the sealed history up to a checkpoint as a verified bundle, then remove those events; the checkpoints
      stay, so what remains verifies from the archive's last checkpoint (run as the tables' owner)
  trace KEY_ID [--demo DIR] [--json]
      one key's custody chain across the KMEs of the demo network (DIR/demo.json, default .kms-demo), read through
      their auditor APIs with the demo's auditor certificate
  trace KEY_ID --kme ID=URL... --ca FILE --cert FILE --key FILE [--json]
      the same across any KMEs, with your auditor certificate
  help
      this text`;

class UsageError extends Error {}

type Out = (line: string) => void;

export async function auditCommand(args: string[], out: Out, err: Out): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case 'keys':
        return await withDb(rest, {}, async (db) => ((await logVkeys(db)).forEach((k) => out(k)), 0));
      case 'checkpoint':
        return await withDb(rest, {}, async (db) => {
          const seal = await lastSeal(db);
          if (!seal) throw new ConfigError('the log has no checkpoint yet (the sealer signs one within a second of the first event)');
          out(seal.checkpoint.replace(/\n$/, ''));
          return 0;
        });
      case 'export':
        return await withDb(rest, { out: { type: 'string' }, 'after-size': { type: 'string' } }, async (db, config, values) => {
          const after = values['after-size'] === undefined ? undefined : Number(values['after-size']);
          if (after !== undefined && (!Number.isSafeInteger(after) || after < 0)) throw new UsageError('--after-size must be a tree size (a whole number)');
          const lines = exportBundle(db, { origin: logOrigin(config), afterSize: after });
          if (typeof values.out === 'string') await writeLinesToFile(values.out, lines);
          else for await (const line of lines) out(line);
          return 0;
        });
      case 'verify':
        return await verifyCommand(rest, out);
      case 'prune':
        return await withDb(
          rest,
          { archive: { type: 'string' }, 'older-than': { type: 'string' }, 'up-to-size': { type: 'string' } },
          async (db, config, values) => pruneCommand(db, config, values, out),
          'owner',
        );
      case 'trace':
        return await traceCommand(rest, out);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        out(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`kms audit: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof ConfigError || e instanceof NoteFormatError) {
      err(`kms audit: ${e.message}`);
      return 2;
    }
    throw e;
  }
}

type Values = Record<string, string | boolean | undefined>;

/** Runs `fn` on the KME's database; `as: 'owner'` connects as the tables' owner where the KME has a role of its own. */
async function withDb(
  args: string[],
  options: Record<string, { type: 'string' | 'boolean' }>,
  fn: (db: pg.Pool, config: Config, values: Values) => Promise<number>,
  as: 'kme' | 'owner' = 'kme',
): Promise<number> {
  const { values } = parse(args, { config: { type: 'string' }, ...options }, false);
  if (typeof values.config !== 'string') throw new UsageError('--config FILE is required');
  const config = loadConfigFile(values.config);
  const env = as === 'owner' && config.database.app_role ? config.database.migrate_url_env : config.database.url_env;
  const db = new pg.Pool({ connectionString: readSecret('the database URL', env), max: 2, connectionTimeoutMillis: 5_000 });
  try {
    return await fn(db, config, values as Values);
  } finally {
    await db.end();
  }
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>, positionals: boolean) {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

async function verifyCommand(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parse(
    args,
    { keys: { type: 'string' }, 'witness-keys': { type: 'string' }, 'trusted-checkpoint': { type: 'string' }, json: { type: 'boolean' } },
    true,
  );
  if (positionals.length !== 1) throw new UsageError('give exactly one BUNDLE file');
  if (typeof values.keys !== 'string') throw new UsageError("--keys FILE is required: the log's verifier keys you pinned (kms audit keys prints them)");
  const keys = readVkeys(values.keys);
  const witnesses = typeof values['witness-keys'] === 'string' ? readVkeys(values['witness-keys']) : [];
  const trusted = typeof values['trusted-checkpoint'] === 'string' ? readText(values['trusted-checkpoint'], 'trusted checkpoint') : undefined;
  const verifier = new BundleVerifier({ keys, witnesses, trustedCheckpoint: trusted === undefined ? undefined : trusted.replace(/\n*$/, '\n') });
  await eachLineOfFile(positionals[0]!, (line) => verifier.line(line)).catch((e: NodeJS.ErrnoException) => {
    if (!e.syscall) throw e; // not the file system's refusal
    throw new ConfigError(`cannot read bundle ${positionals[0]}: ${e.message}`);
  });
  const report = verifier.finish();
  if (values.json) out(JSON.stringify(report));
  else printReport(report, trusted !== undefined, out);
  return report.ok ? 0 : 1;
}

/** A file of verifier keys, one per line (blank lines and # comments skipped); errors name the line. */
function readVkeys(path: string) {
  const keys = readText(path, 'keys file')
    .split('\n')
    .map((l, i) => ({ l: l.trim(), i }))
    .filter(({ l }) => l !== '' && !l.startsWith('#'))
    .map(({ l, i }) => {
      try {
        return parseVkey(l);
      } catch (e) {
        throw new ConfigError(`${path} line ${i + 1}: ${(e as Error).message}`);
      }
    });
  if (keys.length === 0) throw new ConfigError(`${path} holds no verifier key`);
  return keys;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function printReport(r: VerifyReport, trusted: boolean, out: Out): void {
  if (!r.ok) {
    const seq = r.problem?.seq;
    const message = (r.problem?.message ?? '').replace(new RegExp(`^seq ${seq}: `), ''); // said once, up front
    out(`FAILED${seq !== undefined ? ` at seq ${seq}` : ''}: ${message}`);
    return;
  }
  const from = r.startSize + 1;
  out(`OK  custody log ${r.origin}: seqs ${from}–${r.sealedSize} verified against ${r.checkpoints} checkpoint(s) signed with ${r.signedWith.join(' + ') || '(none)'}`);
  out(`    ${r.events} events, ${r.gaps} gaps (numbers of rolled-back transactions)${r.unsealed ? `; ${r.unsealed} event(s) after the last checkpoint, not yet sealed` : ''}`);
  const l = r.lifecycle;
  out(`    lifecycle: keys bound ${l.keysBound}, slave deliveries ${l.slaveDeliveries}, keys destroyed/expired/voided ${l.keysEnded} — none delivered twice, to an SAE not named, without ingest or after destruction`);
  if (l.boundBefore) out(`    ${l.boundBefore} slave deliveries of keys bound before this bundle's start (see the archived bundle)`);
  if (trusted) out('    extends the trusted checkpoint: nothing before it was rewritten or removed');
  for (const [name, w] of Object.entries(r.witnessed)) out(`    witnessed by ${name}: ${w.checkpoints} checkpoint(s), the last of size ${w.lastSize}`);
  if (r.startSize > 0) out(`    starts at the checkpoint of size ${r.startSize}: continues the archived bundle that ends there`);
}

async function traceCommand(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parse(
    args,
    { demo: { type: 'string' }, kme: { type: 'string', multiple: true }, ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, json: { type: 'boolean' } },
    true,
  );
  const v = values as { demo?: string; kme?: string[]; ca?: string; cert?: string; key?: string; json?: boolean };
  const keyId = positionals[0];
  if (positionals.length !== 1 || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(keyId!)) {
    throw new UsageError('give exactly one KEY_ID (a UUID)');
  }
  let target: TraceTarget;
  if (v.kme?.length) {
    if (!v.ca || !v.cert || !v.key) throw new UsageError('--kme needs --ca, --cert and --key (an auditor certificate)');
    const kmes = v.kme.map((s) => {
      const m = /^([A-Za-z0-9._~-]{1,64})=(https:\/\/\S+)$/.exec(s);
      if (!m) throw new UsageError(`--kme "${s}" is not ID=https://host:port`);
      return { id: m[1]!, url: m[2]!.replace(/\/$/, '') };
    });
    target = { kmes, ca: v.ca, cert: v.cert, key: v.key };
  } else {
    const file = `${v.demo ?? '.kms-demo'}/demo.json`;
    let demo: { kmes: Array<{ id: string; url: string }>; ca: string; auditors?: Record<string, { cert: string; key: string }> };
    try {
      demo = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`cannot read ${file} (is the demo running? npm start): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const auditor = Object.values(demo.auditors ?? {})[0];
    if (!auditor) throw new ConfigError(`${file} names no auditor certificate: restart the demo with this version`);
    target = { kmes: demo.kmes, ca: demo.ca, ...auditor };
  }
  const { events, unreachable } = await traceKey(target, keyId!.toLowerCase());
  if (v.json) out(JSON.stringify({ key_id: keyId!.toLowerCase(), events, unreachable }));
  else {
    out(`key ${keyId!.toLowerCase()}: ${events.length} custody event(s) at ${new Set(events.map((e) => e.kme)).size} of ${target.kmes.length} KME(s)`);
    for (const e of events) out(`  ${traceLine(e)}`);
    for (const u of unreachable) out(`  ${u.kme}: could not read its log: ${u.why}`);
  }
  return unreachable.length > 0 ? 1 : events.length > 0 ? 0 : 1;
}

async function pruneCommand(db: pg.Pool, config: Config, values: Values, out: Out): Promise<number> {
  if (typeof values.archive !== 'string') throw new UsageError('--archive FILE is required: the bundle of what is pruned');
  const days = values['older-than'] === undefined ? undefined : Number(values['older-than']);
  const size = values['up-to-size'] === undefined ? undefined : Number(values['up-to-size']);
  if ((days === undefined) === (size === undefined)) throw new UsageError('give --older-than DAYS or --up-to-size N');
  if (days !== undefined && !(days >= 0)) throw new UsageError('--older-than must be a number of days');
  if (size !== undefined && !(Number.isSafeInteger(size) && size > 0)) throw new UsageError('--up-to-size must be a checkpoint size');
  const olderThan = days === undefined ? undefined : new Date(Date.now() - days * 86_400_000);
  let r;
  try {
    r = await pruneLog(db, { archive: values.archive, origin: logOrigin(config), kmeId: config.kme_id, upToSize: size, olderThan });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    out(`kms audit prune: ${code === 'EEXIST' ? `${values.archive} exists already: an archive is never overwritten` : (e as Error).message}`);
    return 1;
  }
  if (!r) {
    out('nothing to prune: no checkpoint beyond the last pruning is old enough');
    return 0;
  }
  out(`archived seqs ${r.fromSize + 1}–${r.upToSize} (${r.events} events) to ${r.archive}, verified, sha256 ${r.archiveSha256}`);
  out(`removed them from the database; the checkpoints stay. Keep the archive with its last checkpoint: what remains verifies from there.`);
  return 0;
}

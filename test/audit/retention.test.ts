import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { exportBundle } from '../../src/audit/export.js';
import { logVkeys } from '../../src/audit/log-keys.js';
import { pruneLog } from '../../src/audit/prune.js';
import { BundleVerifier, type VerifyReport } from '../../src/audit/verify.js';
import { parseVkey } from '../../src/audit/vkeys.js';
import { lastSeal } from '../../src/store/seals.js';
import { eventually } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 12 item 6: sealed history is archived as a verified bundle and pruned; the checkpoints stay, so what remains
// verifies from the archive's last checkpoint, and the pruning is itself in the log. Nothing else can remove events.

const dir = mkdtempSync(join(tmpdir(), 'kms-retention-'));
let k: TestKms;
let owner: pg.Pool;
let firstSize: number;

async function sealAll(): Promise<number> {
  const { rows } = await owner.query<{ max: string }>('SELECT max(seq) AS max FROM audit_event');
  await eventually(async () => {
    await k.kms.sealer.sealOnce();
    if (((await lastSeal(owner))?.treeSize ?? 0) < Number(rows[0]!.max)) throw new Error('not sealed yet');
  }, 10_000);
  return (await lastSeal(owner))!.treeSize;
}

async function traffic(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const enc = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
    await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${enc.body.keys[0].key_ID}`);
  }
}

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 100 } });
  owner = new pg.Pool({ connectionString: k.db.url, max: 2 });
  await traffic(3);
  firstSize = await sealAll();
  await traffic(3);
  await sealAll();
});
t.teardown(async () => {
  await owner?.end();
  await k?.close();
  rmSync(dir, { recursive: true, force: true });
});

function verifyLines(lines: string[], trusted?: string): VerifyReport {
  return verifyWith(lines, trusted);
}
let keys: ReturnType<typeof parseVkey>[] = [];
function verifyWith(lines: string[], trusted?: string): VerifyReport {
  const v = new BundleVerifier({ keys, trustedCheckpoint: trusted });
  for (const l of lines) if (!v.line(l)) break;
  return v.finish();
}

t.test('prune up to a checkpoint: the archive verifies, what remains verifies from its last checkpoint', async (t) => {
  keys = (await logVkeys(owner)).map(parseVkey);
  const before = Number((await owner.query('SELECT count(*) AS n FROM audit_event')).rows[0].n);
  const archive = join(dir, 'archive-1.jsonl');
  const r = await pruneLog(owner, { archive, origin: 'qkms/KME_T/custody', kmeId: 'KME_T', upToSize: firstSize });
  t.match(r, { fromSize: 0, upToSize: firstSize, archive });
  const after = Number((await owner.query('SELECT count(*) AS n FROM audit_event')).rows[0].n);
  t.equal(after, before - r!.events + 1, 'the archived events are gone; one prune event was added');
  t.equal(Number((await owner.query('SELECT min(seq) AS s FROM audit_event')).rows[0].s), firstSize + 1);

  const archived = readFileSync(archive, 'utf8').trim().split('\n');
  const a = verifyLines(archived);
  t.ok(a.ok && a.sealedSize === firstSize && a.unsealed === 0, `the archive stands on its own: ${a.problem?.message ?? 'ok'}`);
  const lastCheckpoint = JSON.parse(archived.at(-2)!).note as string;

  await sealAll(); // the prune event
  const rest: string[] = [];
  for await (const l of exportBundle(owner, { origin: 'unused' })) rest.push(l);
  t.equal(JSON.parse(rest[0]!).start.size, firstSize, 'the export now starts where the archive ends');
  const v = verifyLines(rest, lastCheckpoint);
  t.ok(v.ok, `what remains verifies from the archive's last checkpoint: ${v.problem?.message ?? 'ok'}`);
  t.equal(v.startSize, firstSize);
  t.ok(v.lifecycle.boundBefore >= 0);
  const prune = await owner.query(`SELECT body FROM audit_event WHERE operation = 'prune'`);
  t.match(JSON.parse(prune.rows[0].body).detail, { from_size: 0, up_to_size: firstSize, archive_sha256: /^[0-9a-f]{64}$/ }, 'the log says it was pruned, and what the archive hashes to');

  t.equal(await pruneLog(owner, { archive: join(dir, 'archive-2.jsonl'), origin: 'o', kmeId: 'KME_T', upToSize: firstSize }), undefined, 'nothing more to prune up to there');
  t.notOk(existsSync(join(dir, 'archive-2.jsonl')));
  await t.rejects(pruneLog(owner, { archive, origin: 'o', kmeId: 'KME_T', upToSize: (await lastSeal(owner))!.treeSize }), { code: 'EEXIST' }, 'an archive is never overwritten');
});

t.test('events go only through a recorded pruning, and only those it covers', async (t) => {
  const c = await owner.connect();
  try {
    await c.query('BEGIN');
    await c.query(`SET LOCAL qkms.pruning = 'on'`);
    await t.rejects(c.query(`DELETE FROM audit_event WHERE seq = (SELECT max(seq) FROM audit_event)`), { code: '42501', message: /append-only/ }, 'beyond any recorded pruning');
    await c.query('ROLLBACK');
  } finally {
    c.release();
  }
  await t.rejects(owner.query(`DELETE FROM audit_prune`), { code: '42501' }, 'the record of prunings is append-only');
});

import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { createMockSigningKey } from '../../hsm-mock/mock-signing-key.js';
import { auditCommand } from '../../src/audit/cli.js';
import { auditBody, insertAuditSql } from '../../src/audit/event.js';
import { exportBundle } from '../../src/audit/export.js';
import { LogKeys, logVkeys } from '../../src/audit/log-keys.js';
import { Sealer } from '../../src/audit/sealer.js';
import { BundleVerifier, type VerifyReport } from '../../src/audit/verify.js';
import { parseVkey } from '../../src/audit/vkeys.js';
import { createDb } from '../../src/store/db.js';
import { migrate } from '../../src/store/migrate.js';
import { lastSeal } from '../../src/store/seals.js';
import { freshDatabase } from '../helpers/database.js';
import { eventually } from '../helpers/etsi.js';
import { capturingLogger } from '../helpers/logs.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 12: the custody log of a real KME (deliveries over mutual TLS, a real database), sealed by its sealer,
// exported as a bundle and verified offline against the pinned keys — then tampered with as a database superuser
// would (change, delete, insert, truncate, reorder, rewrite with the sealed hashes, replace everything with a
// forgery signed by another key): each is caught, naming the sequence number. Each tamper runs in a transaction
// that is rolled back, so they start from the same history.

const dir = mkdtempSync(join(tmpdir(), 'kms-custody-'));
let k: TestKms;
let su: pg.Client; // the superuser that tampers
let keys: ReturnType<typeof parseVkey>[];
let keysFile: string;
let earlier: string; // a checkpoint an auditor kept from an earlier visit
let latest: string; // the latest checkpoint, as an auditor would fetch it before exporting
let gapSeq: number;

async function sealEverything(kms: TestKms): Promise<string> {
  const { rows } = await su.query<{ max: string }>('SELECT max(seq)::text AS max FROM audit_event');
  await eventually(async () => {
    await kms.kms.sealer.sealOnce();
    const seal = await lastSeal(su);
    if ((seal?.treeSize ?? 0) < Number(rows[0]!.max)) throw new Error('not sealed yet');
  }, 10_000);
  return (await lastSeal(su))!.checkpoint;
}

async function traffic(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const enc = await k.client('SAE_A').post('/api/v1/keys/SAE_B/enc_keys', { number: 2, additional_slave_SAE_IDs: ['SAE_C'] });
    if (enc.status !== 200) throw new Error(`enc_keys: ${enc.status} ${enc.text}`);
    const ids = (enc.body as { keys: Array<{ key_ID: string }> }).keys.map((x) => ({ key_ID: x.key_ID }));
    for (const sae of ['SAE_B', 'SAE_C'] as const) {
      const dec = await k.client(sae).post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: ids });
      if (dec.status !== 200) throw new Error(`dec_keys: ${dec.status} ${dec.text}`);
    }
  }
  await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys?size=100'); // refused: audited
}

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 200 } });
  t.comment(`hsm: ${k.wrapper.description}`);
  su = new pg.Client({ connectionString: k.db.url });
  await su.connect();
  await traffic(3);
  // A number whose transaction rolls back: sealed as a gap.
  await su.query('BEGIN');
  const { rows } = await su.query<{ seq: string }>(`${insertAuditSql(1)} RETURNING seq`, [[auditBody({ operation: 'status', outcome: 'refused', actor: 'sae:SAE_X' })]]);
  gapSeq = Number(rows[0]!.seq);
  await su.query('ROLLBACK');
  earlier = await sealEverything(k);
  await traffic(3);
  latest = await sealEverything(k);
  await k.kms.close(); // nothing writes any more: the tampers below see one history
  keysFile = join(dir, 'pinned.vkeys');
  writeFileSync(keysFile, (await logVkeys(su)).join('\n') + '\n');
  keys = (await logVkeys(su)).map(parseVkey);
});
t.teardown(async () => {
  await su?.end();
  await k?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function bundle(db: Pick<pg.Client, 'query'>): Promise<string[]> {
  const lines: string[] = [];
  for await (const l of exportBundle(db, { origin: 'unused' })) lines.push(l);
  return lines;
}

function verify(lines: string[], opts: { trusted?: string; pinned?: typeof keys } = {}): VerifyReport {
  const v = new BundleVerifier({ keys: opts.pinned ?? keys, trustedCheckpoint: opts.trusted });
  for (const l of lines) if (!v.line(l)) break;
  return v.finish();
}

/** Runs `tamper` as the superuser, with the log's triggers off, exports, and rolls it all back. */
async function tampered(tamper: (c: pg.Client) => Promise<unknown>): Promise<string[]> {
  await su.query('BEGIN');
  try {
    await su.query(`SET LOCAL session_replication_role = replica`); // triggers off: append-only guards and numbering
    await tamper(su);
    return await bundle(su);
  } finally {
    await su.query('ROLLBACK');
  }
}

const seqOf = async (operation: string, nth = 0): Promise<number> =>
  Number((await su.query<{ seq: string }>(`SELECT seq FROM audit_event WHERE operation = $1 ORDER BY seq OFFSET $2 LIMIT 1`, [operation, nth])).rows[0]!.seq);

t.test('the whole history verifies offline against the pinned keys, with both signatures and the lifecycle', async (t) => {
  const lines = await bundle(su);
  const r = verify(lines, { trusted: latest });
  t.ok(r.ok, r.problem?.message ?? 'verified');
  t.same(r.signedWith, ['ecdsa-p256', 'ml-dsa-65']);
  t.equal(r.gaps, 1, 'the rolled-back number is a sealed gap');
  t.equal(r.unsealed, 0);
  t.equal(r.lifecycle.keysBound, 12, 'six requests of two keys');
  t.equal(r.lifecycle.slaveDeliveries, 24, 'each to SAE_B and SAE_C');
  t.equal(r.lifecycle.keysEnded, 12, 'each destroyed once both had it');
  t.ok(verify(lines, { trusted: earlier }).ok, 'extends the checkpoint an auditor kept earlier');
  t.ok(verify(lines, { pinned: keys.filter((x) => x.algorithm === 'ml-dsa-65') }).ok, 'a post-quantum-only auditor verifies it too');

  const file = join(dir, 'bundle.jsonl');
  const err: string[] = [];
  t.equal(await auditCommand(['export', '--config', join(dir, 'absent.json')], () => undefined, (l) => err.push(l)), 2, 'export needs a readable config');
  t.match(err.join('\n'), /^kms audit: .*absent\.json/);
  writeFileSync(file, lines.join('\n') + '\n');
  writeFileSync(join(dir, 'latest.note'), latest);
  const printed: string[] = [];
  t.equal(await auditCommand(['verify', file, '--keys', keysFile, '--trusted-checkpoint', join(dir, 'latest.note')], (l) => printed.push(l), (l) => printed.push(l)), 0);
  t.match(printed.join('\n'), /^OK {2}custody log qkms\/KME_T\/custody: seqs 1–\d+ verified against \d+ checkpoint\(s\) signed with ecdsa-p256 \+ ml-dsa-65/);
  const json: string[] = [];
  t.equal(await auditCommand(['verify', file, '--keys', keysFile, '--json'], (l) => json.push(l), () => undefined), 0);
  t.match(JSON.parse(json[0]!), { ok: true, gaps: 1, signedWith: ['ecdsa-p256', 'ml-dsa-65'] });
});

t.test('a changed event is named', async (t) => {
  const x = await seqOf('deliver_slave', 2);
  const r = verify(await tampered((c) => c.query(`UPDATE audit_event SET body = replace(body, '"outcome":"ok"', '"outcome":"refused"') WHERE seq = $1`, [x])));
  t.match(r, { ok: false, problem: { seq: x, message: new RegExp(`^seq ${x}: the event is not the one sealed`) } });
});

t.test('a deleted event is named', async (t) => {
  const x = await seqOf('deliver_master', 1);
  const r = verify(await tampered((c) => c.query(`DELETE FROM audit_event WHERE seq = $1`, [x])));
  t.match(r, { ok: false, problem: { seq: x, message: new RegExp(`^seq ${x} is missing`) } });
});

t.test('a deleted event that ended a sealed range is named the same way', async (t) => {
  // Where the sealer cuts its ranges depends on timing; the message must not (CI once deleted such an event above).
  const { rows } = await su.query<{ seq: string }>(`SELECT max(s.tree_size)::text AS seq FROM audit_seal s JOIN audit_event e ON e.seq = s.tree_size`);
  const x = Number(rows[0]!.seq);
  const r = verify(await tampered((c) => c.query(`DELETE FROM audit_event WHERE seq = $1`, [x])));
  t.match(r, { ok: false, problem: { seq: x, message: new RegExp(`^seq ${x} is missing \\(a checkpoint covers seq ${x};`) } });
});

t.test('an inserted event is named: into a rolled-back number, or behind another number', async (t) => {
  const forged = auditBody({ operation: 'status', outcome: 'refused', actor: 'sae:SAE_D' });
  const insert = (seq: number) => (c: pg.Client) =>
    c.query(`INSERT INTO audit_event (seq, at, actor, operation, outcome, body) VALUES ($1, now(), 'sae:SAE_D', 'deliver_slave', 'ok', $2)`, [seq, forged]);
  t.match(verify(await tampered(insert(gapSeq))), { ok: false, problem: { seq: gapSeq, message: /is not the one sealed/ } }, 'into the gap');
  const x = await seqOf('destroy', 0);
  const shifted = await tampered(async (c) => {
    await c.query(`UPDATE audit_event SET seq = seq + 1000000 WHERE seq >= $1`, [x]);
    await c.query(`UPDATE audit_event SET seq = seq - 1000000 + 1 WHERE seq >= 1000000`);
    await insert(x)(c);
  });
  t.match(verify(shifted), { ok: false, problem: { seq: x } }, 'everything after it moved up by one');
});

t.test('a truncated tail is named: by the checkpoints that cover it, or by the checkpoint an auditor kept', async (t) => {
  const earlierSize = Number(earlier.split('\n')[1]);
  const eventsOnly = await tampered((c) => c.query(`DELETE FROM audit_event WHERE seq > $1`, [earlierSize]));
  t.match(verify(eventsOnly), { ok: false, problem: { seq: earlierSize + 1, message: /is missing/ } }, 'events cut, checkpoints kept');
  const both = await tampered(async (c) => {
    await c.query(`DELETE FROM audit_event WHERE seq > $1`, [earlierSize]);
    await c.query(`DELETE FROM audit_seal WHERE tree_size > $1`, [earlierSize]);
  });
  t.ok(verify(both).ok, 'events and checkpoints cut together: consistent on its own, which is why auditors keep checkpoints');
  t.match(verify(both, { trusted: latest }), { ok: false, problem: { seq: earlierSize + 1, message: /truncated/ } }, 'caught by the kept checkpoint');
});

t.test('two events swapped are named', async (t) => {
  const [x, y] = [await seqOf('deliver_master', 0), await seqOf('deliver_slave', 3)];
  const r = verify(
    await tampered(async (c) => {
      await c.query(`UPDATE audit_event SET seq = -1 WHERE seq = $1`, [x]);
      await c.query(`UPDATE audit_event SET seq = $1 WHERE seq = $2`, [x, y]);
      await c.query(`UPDATE audit_event SET seq = $1 WHERE seq = -1`, [y]);
    }),
  );
  t.match(r, { ok: false, problem: { seq: x } });
});

t.test("an event rewritten together with the sealer's leaf hashes: its checkpoint's range is named", async (t) => {
  const x = await seqOf('deliver_slave', 5);
  const r = verify(
    await tampered(async (c) => {
      await c.query(`UPDATE audit_event SET body = replace(body, '"outcome":"ok"', '"outcome":"refused"') WHERE seq = $1`, [x]);
      // Recompute the sealed hash of that leaf as a careful forger would.
      await c.query(
        `UPDATE audit_seal s SET leaf_hashes = overlay(leaf_hashes placing sha256('\\x00'::bytea || convert_to(e.body, 'UTF8')) from (32 * ($1 - s.first_seq))::int + 1)
           FROM audit_event e WHERE e.seq = $1 AND $1 BETWEEN s.first_seq AND s.tree_size`,
        [x],
      );
    }),
  );
  t.equal(r.ok, false);
  t.match(r.problem?.message, /^seqs \d+–\d+: the events do not give the root signed/);
  const [from, to] = r.problem!.message.match(/\d+/g)!.map(Number);
  t.ok(from! <= x && x <= to!, `the range ${from}–${to} holds seq ${x}`);
});

t.test('a whole log replaced by a self-consistent forgery, signed by another key, fails against the pinned keys', async (t) => {
  const forgery = await freshDatabase();
  const { log } = capturingLogger();
  await migrate(forgery.url, log);
  const db = createDb({ url: forgery.url, poolSize: 4, log });
  const keys = new LogKeys({ db, wrapper: createMockKeyWrapper(), signingKey: createMockSigningKey(), name: 'qkms/KME_T/custody', log });
  const sealer = new Sealer({ db, databaseUrl: forgery.url, keys, everyMs: 50, log });
  try {
    const { rows } = await su.query<{ body: string }>(`SELECT body FROM audit_event ORDER BY seq`);
    const bodies = rows.map((r) => r.body.replace('SAE_C', 'SAE_D'));
    await db.query(insertAuditSql(1), [bodies]);
    while ((await sealer.sealOnce()) > 0);
    const lines = await bundle(db);
    const forgersKeys = (await logVkeys(db)).map(parseVkey);
    t.ok(verify(lines, { pinned: forgersKeys }).ok, "self-consistent under the forger's own keys");
    const r = verify(lines);
    t.match(r, { ok: false, problem: { message: /does not verify with the pinned keys/ } });
    t.ok(r.problem?.seq !== undefined, `named: seq ${r.problem?.seq}`);
  } finally {
    await sealer.close();
    await keys.close();
    await db.end();
    await forgery.drop();
  }
});

t.test('bad input to verify gets a one-line answer, never a stack trace', async (t) => {
  const run = async (args: string[]) => {
    const lines: string[] = [];
    const code = await auditCommand(args, (l) => lines.push(l), (l) => lines.push(l));
    return { code, text: lines.join('\n') };
  };
  const empty = join(dir, 'empty');
  const garbage = join(dir, 'garbage');
  writeFileSync(empty, '');
  writeFileSync(garbage, Buffer.from([0xff, 0x00, 0x13, 0x37, 0x0a, 0x41]));
  t.match(await run(['verify', empty, '--keys', keysFile]), { code: 1, text: /^FAILED: the bundle is empty: no header line$/ });
  t.match(await run(['verify', garbage, '--keys', keysFile]), { code: 1, text: /^FAILED: not a custody bundle/ });
  t.match(await run(['verify', join(dir, 'absent'), '--keys', keysFile]), { code: 2, text: /^kms audit: cannot read bundle .*absent: ENOENT/ });
  t.match(await run(['verify', empty, '--keys', garbage]), { code: 2, text: /^kms audit: .*garbage line 1: not a verifier key/ });
  t.match(await run(['verify', empty]), { code: 2, text: /--keys FILE is required/ });
  const cut = join(dir, 'cut.jsonl');
  writeFileSync(cut, (await bundle(su)).slice(0, -1).join('\n') + '\n');
  t.match(await run(['verify', cut, '--keys', keysFile]), { code: 1, text: /^FAILED: the bundle ends without its end line/ });
});

t.test('a failure is printed once, naming the sequence number up front', async (t) => {
  const x = await seqOf('deliver_master', 0);
  const file = join(dir, 'tampered.jsonl');
  writeFileSync(file, (await tampered((c) => c.query(`UPDATE audit_event SET body = replace(body, '"outcome":"ok"', '"outcome":"refused"') WHERE seq = $1`, [x]))).join('\n') + '\n');
  const lines: string[] = [];
  t.equal(await auditCommand(['verify', file, '--keys', keysFile], (l) => lines.push(l), (l) => lines.push(l)), 1);
  t.match(lines.join('\n'), /^FAILED at seq \d+: (?!seq \d+:)\S/, 'one line, the number up front and not again');
  t.equal(lines.length, 1);
});

t.test('of two problems in one checkpoint range, the earlier is named: a changed event before a missing one', async (t) => {
  const lines = await bundle(su);
  // Two event lines of the same checkpoint range, the second a few numbers later.
  const ranges: number[][] = [[]];
  lines.forEach((l, i) => (l.startsWith('{"type":"checkpoint"') ? ranges.push([]) : l.startsWith('{"type":"event"') && ranges.at(-1)!.push(i)));
  const range = ranges.find((r) => r.length >= 3)!;
  const [changed, removed] = [range[0]!, range[2]!];
  const seqOfLine = (i: number) => JSON.parse(lines[i]!).seq as number;
  const tampered = lines.map((l, i) => (i === changed ? l.replace('"outcome":"ok"', '"outcome":"failed"').replace('"outcome":"refused"', '"outcome":"failed"') : l)).filter((_, i) => i !== removed);
  t.match(verify(tampered), { ok: false, problem: { seq: seqOfLine(changed), message: /is not the one sealed/ } }, 'the change, not the later gap');
  const onlyRemoved = lines.filter((_, i) => i !== removed);
  t.match(verify(onlyRemoved), { ok: false, problem: { seq: seqOfLine(removed), message: /is missing/ } }, 'the gap alone');
});

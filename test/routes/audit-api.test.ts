import t from 'tap';
import { parseCheckpoint } from '../../src/audit/checkpoint.js';
import { eventLeafHash } from '../../src/audit/leaves.js';
import { verifyConsistency, verifyInclusion } from '../../src/audit/merkle.js';
import { openNote } from '../../src/audit/signed-note.js';
import { BundleVerifier } from '../../src/audit/verify.js';
import { parseVkey } from '../../src/audit/vkeys.js';
import { lastSeal } from '../../src/store/seals.js';
import { EtsiClient } from '../helpers/client.js';
import { etsiErrorProblem, eventually } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 12 item 4: the auditor API (src/routes/audit/) over real mutual TLS: only an auditor's certificate gets in;
// events by range, key_ID and SAE; checkpoints; inclusion and consistency proofs that verify against the signed
// checkpoints with the published keys; the streamed export bundle, which the offline verifier accepts.

let k: TestKms;
let keyId: string;
let firstSize: number;
const auditor = () => k.client('AUDITOR_1');

async function sealAll(): Promise<number> {
  const { rows } = await k.kms.db.query<{ max: string }>('SELECT max(seq) AS max FROM audit_event');
  const sealed = await eventually(async () => {
    await k.kms.sealer.sealOnce();
    return ((await lastSeal(k.kms.db))?.treeSize ?? 0) >= Number(rows[0]!.max);
  }, 10_000);
  if (!sealed) throw new Error(`events up to ${rows[0]!.max} not sealed within 10 s`);
  return (await lastSeal(k.kms.db))!.treeSize;
}

t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 100 } });
  const enc = await k.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  keyId = (enc.body as { keys: Array<{ key_ID: string }> }).keys[0]!.key_ID;
  firstSize = await sealAll();
  await k.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${keyId}`);
  await sealAll();
});
t.teardown(() => k?.close());

t.test('only an auditor certificate gets in: an SAE, a KME, a stranger and no certificate get 401', async (t) => {
  await k.kms.refusals.flush();
  const before = (await k.kms.db.query<{ s: string }>('SELECT max(seq) AS s FROM audit_event')).rows[0]!.s;
  const kme = new EtsiClient(k.kms.url, k.pki.ca, k.pki.kmes.KME_T);
  const anonymous = new EtsiClient(k.kms.url, k.pki.ca, {});
  try {
    for (const [who, c] of [['SAE_A', k.client('SAE_A')], ['KME_T', kme], ['SAE_X', k.client('SAE_X')], ['no certificate', anonymous]] as const) {
      const res = await c.get('/audit/v1/events');
      t.equal(res.status, 401, who);
      t.equal(etsiErrorProblem(res), undefined, `${who}: an ETSI Error body`);
    }
  } finally {
    kme.close();
    anonymous.close();
  }
  t.equal((await auditor().get('/audit/v1/events')).status, 200, 'AUDITOR_1');
  await k.kms.refusals.flush();
  // A summary is written at most every window, so the four may be split over two.
  const { rows } = await k.kms.db.query(`SELECT body FROM audit_event WHERE actor = 'anonymous' AND operation = 'request' AND seq > $1`, [before]);
  const details = rows.map((r) => JSON.parse(r.body).detail);
  t.equal(details.reduce((n, d) => n + d.count, 0), 4, 'the four refusals are counted in summaries of unidentified callers');
  t.ok(details.flatMap((d) => d.samples).every((x: { operation: string }) => x.operation === 'audit_request'), 'as auditor API requests');
});

t.test('events by range, page by page, by key_ID and by SAE', async (t) => {
  const page = await auditor().get('/audit/v1/events?limit=2');
  t.equal(page.status, 200);
  const body = page.body as { events: Array<{ seq: number; sealed: boolean; event: any }>; next_from_seq: number };
  t.same(body.events.map((e) => e.seq), [1, 2]);
  t.equal(body.next_from_seq, 3);
  const next = (await auditor().get(`/audit/v1/events?from_seq=3&limit=1`)).body as typeof body;
  t.equal(next.events[0]!.seq, 3);
  const ofKey = (await auditor().get(`/audit/v1/events?key_id=${keyId.toUpperCase()}`)).body as typeof body;
  t.same(ofKey.events.map((e) => e.event.operation), ['deliver_master', 'deliver_slave', 'destroy'], 'the whole custody chain of one key');
  t.ok(ofKey.events.every((e) => e.sealed), 'sealed');
  const ofSae = (await auditor().get(`/audit/v1/events?sae_id=SAE_B`)).body as typeof body;
  t.same(ofSae.events.map((e) => e.event.operation), ['deliver_master', 'deliver_slave', 'destroy'], 'named as slave, then its own fetch');
  for (const bad of ['from_seq=0', 'limit=5000', 'key_id=nope', `key_id=${keyId}&sae_id=SAE_B`, 'bogus=1']) {
    const res = await auditor().get(`/audit/v1/events?${bad}`);
    t.equal(res.status, 400, bad);
    t.equal(etsiErrorProblem(res), undefined, `${bad}: an ETSI Error body`);
  }
});

t.test('checkpoints and proofs verify against the published keys', async (t) => {
  const vkeys = ((await auditor().get('/audit/v1/keys')).body as { vkeys: string[] }).vkeys.map(parseVkey);
  t.same(vkeys.map((v) => v.algorithm).sort(), ['ecdsa-p256', 'ml-dsa-65']);
  const latest = (await auditor().get('/audit/v1/checkpoint')).body as { tree_size: number; checkpoint: string };
  const cp = parseCheckpoint(openNote(latest.checkpoint, vkeys).text);
  t.equal(cp.size, latest.tree_size);
  const cps = (await auditor().get('/audit/v1/checkpoints?limit=100')).body as { checkpoints: Array<{ tree_size: number }> };
  t.ok(cps.checkpoints.some((c) => c.tree_size === firstSize), 'the earlier checkpoint is listed');

  // Proofs against the checkpoint the auditor holds: the log goes on growing meanwhile (the refusals of the tests
  // above are written in batches, and sealed as they come).
  const size = latest.tree_size;
  const ofKey = ((await auditor().get(`/audit/v1/events?key_id=${keyId}`)).body as { events: Array<{ seq: number; event: unknown }> }).events;
  for (const e of ofKey) {
    const p = (await auditor().get(`/audit/v1/proofs/inclusion?seq=${e.seq}&tree_size=${size}`)).body as { leaf_index: number; tree_size: number; leaf_hash: string; proof: string[] };
    const leaf = eventLeafHash(JSON.stringify(e.event)); // the event as served re-serializes to its canonical body
    t.equal(leaf.toString('base64'), p.leaf_hash, `seq ${e.seq}: the served event is the sealed leaf`);
    t.ok(verifyInclusion(p.leaf_index, p.tree_size, leaf, p.proof.map((h) => Buffer.from(h, 'base64')), cp.root), `seq ${e.seq} is in the signed tree`);
  }
  const c = (await auditor().get(`/audit/v1/proofs/consistency?first=${firstSize}&second=${size}`)).body as { second: number; proof: string[] };
  const first = (await auditor().get(`/audit/v1/checkpoints?from_size=${firstSize}&limit=1`)).body as { checkpoints: Array<{ checkpoint: string }> };
  const firstRoot = parseCheckpoint(openNote(first.checkpoints[0]!.checkpoint, vkeys).text).root;
  t.ok(verifyConsistency(firstSize, c.second, firstRoot, cp.root, c.proof.map((h) => Buffer.from(h, 'base64'))), 'the latest checkpoint extends the earlier one');
  t.equal((await auditor().get(`/audit/v1/proofs/inclusion?seq=${size + 1}&tree_size=${size}`)).status, 400, 'a seq beyond the tree');
  const sizes = new Set(((await auditor().get('/audit/v1/checkpoints?limit=1000')).body as { checkpoints: Array<{ tree_size: number }> }).checkpoints.map((x) => x.tree_size));
  const noCheckpoint = [...Array(size).keys()].map((i) => i + 1).find((n) => !sizes.has(n))!;
  t.equal((await auditor().get(`/audit/v1/proofs/inclusion?seq=1&tree_size=${noCheckpoint}`)).status, 404, `a size that is no checkpoint (${noCheckpoint})`);
  t.equal((await auditor().get(`/audit/v1/export?after_size=${noCheckpoint}`)).status, 404, 'an export start that is no checkpoint');
});

t.test('the streamed export verifies offline', async (t) => {
  const res = await auditor().get('/audit/v1/export');
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /application\/x-ndjson/);
  const vkeys = ((await auditor().get('/audit/v1/keys')).body as { vkeys: string[] }).vkeys.map(parseVkey);
  const v = new BundleVerifier({ keys: vkeys });
  for (const line of res.text.split('\n').filter((l) => l !== '')) v.line(line);
  const report = v.finish();
  t.ok(report.ok, report.problem?.message ?? 'verified');
  t.equal(report.lifecycle.slaveDeliveries, 1);
});

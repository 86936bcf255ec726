import t from 'tap';
import pg from 'pg';
import { askToCosign } from '../../src/peers/cosigning.js';
import { traceKey, traceLine } from '../../src/audit/trace.js';
import { exportBundle } from '../../src/audit/export.js';
import { logVkeys } from '../../src/audit/log-keys.js';
import { BundleVerifier } from '../../src/audit/verify.js';
import { parseVkey } from '../../src/audit/vkeys.js';
import { PeerRefusedError } from '../../src/peers/peer-client.js';
import { lastSeal } from '../../src/store/seals.js';
import { eventually } from '../helpers/etsi.js';
import { LINE, startTestNetwork, type NetworkKme, type TestNetwork } from '../helpers/network.js';

// Issue 12 item 3, witnessing: KME_B cosigns KME_A's checkpoints over the real KME-to-KME channel, only when each
// extends the last one it cosigned, and records each cosigning in its own custody log. The cosignatures travel in
// KME_A's export and verify against KME_B's keys. When KME_A's history is rewritten (a fork), KME_B refuses.

let net: TestNetwork;
let a: NetworkKme;
let b: NetworkKme;
t.before(async () => {
  net = await startTestNetwork({ ...LINE, fill: 50 });
  [a, b] = [net.kme('KME_A'), net.kme('KME_B')];
});
t.teardown(() => net?.close());

async function traffic(): Promise<void> {
  const enc = await net.client('SAE_A').post('/api/v1/keys/SAE_C/enc_keys', { number: 2 });
  if (enc.status !== 200) throw new Error(`enc_keys ${enc.status} ${enc.text}`);
  const dec = await net.client('SAE_C').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  if (dec.status !== 200) throw new Error(`dec_keys ${dec.status} ${dec.text}`);
}

async function sealAll(k: NetworkKme): Promise<number> {
  const max = (await k.query('SELECT max(seq)::int AS max FROM audit_event'))[0]!.max as number;
  await eventually(async () => {
    await k.kms.sealer.sealOnce();
    if (((await lastSeal(k.kms.db))?.treeSize ?? 0) < max) throw new Error('not sealed yet');
  }, 10_000);
  return (await lastSeal(k.kms.db))!.treeSize;
}

const cosign = () => askToCosign(a.kms.db, a.kms.network.clients.get('KME_B')!);

t.test('a peer cosigns each checkpoint that extends the last, and records it in its own log', async (t) => {
  await traffic();
  const first = await sealAll(a);
  t.match(await cosign(), { cosigned: true, witness: 'KME_B' }, 'first contact: KME_B pins the keys and cosigns');
  await traffic();
  const second = await sealAll(a);
  t.ok(second > first);
  t.match(await cosign(), { cosigned: true }, 'a later checkpoint, with a consistency proof from the first');
  t.equal(await cosign(), undefined, 'nothing new to cosign');
  const held = await b.query(`SELECT origin, tree_size::int AS size FROM witnessed_log WHERE peer_kme_id = 'KME_A'`);
  t.match(held, [{ origin: 'qkms/KME_A/custody', size: second }]);
  const witnessed = await b.query(`SELECT body FROM audit_event WHERE operation = 'witness' AND outcome = 'ok' ORDER BY seq`);
  t.ok(witnessed.length >= 2, "KME_B's own log records each cosigning");
  t.match(JSON.parse(witnessed.at(-1)!.body).detail, { origin: 'qkms/KME_A/custody', size: second });

  const lines: string[] = [];
  for await (const l of exportBundle(a.kms.db, { origin: 'unused' })) lines.push(l);
  const v = new BundleVerifier({ keys: (await logVkeys(a.kms.db)).map(parseVkey), witnesses: (await logVkeys(b.kms.db)).map(parseVkey) });
  for (const l of lines) v.line(l);
  const report = v.finish();
  t.ok(report.ok, report.problem?.message ?? 'verified');
  t.match(report.witnessed['qkms/KME_B/custody'], { lastSize: second });
  t.ok(report.witnessed['qkms/KME_B/custody']!.checkpoints >= 2, 'both cosigned checkpoints verify with the witness keys');
});

t.test("kms audit trace: one key's custody chain across the three KMEs, through their auditor APIs", async (t) => {
  const enc = await net.client('SAE_A').post('/api/v1/keys/SAE_C/enc_keys', { number: 1 });
  const keyId = enc.body.keys[0].key_ID as string;
  await net.client('SAE_C').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${keyId}`);
  const target = {
    kmes: ['KME_A', 'KME_B', 'KME_C'].map((id) => ({ id, url: net.kme(id).kms.url })),
    ca: net.pki.ca,
    ...net.pki.auditors.AUDITOR_1!,
  };
  const { events, unreachable } = await traceKey(target, keyId);
  t.same(unreachable, []);
  const chain = events.map((e) => `${e.kme} ${e.event.operation}`);
  t.same(
    [...chain].sort(),
    ['KME_A deliver_master', 'KME_A reserve', 'KME_B relay', 'KME_B reserve', 'KME_C deliver_slave', 'KME_C destroy', 'KME_C reserve'],
    'reserved along the path, relayed, handed to the master, fetched by the slave at its own KME, destroyed there',
  );
  t.equal(chain[0], 'KME_A reserve', 'in order of time: it starts at the master KME');
  t.same(chain.slice(-2), ['KME_C deliver_slave', 'KME_C destroy'], 'and ends where the slave fetched it');
  t.match(traceLine(events.find((e) => e.event.operation === 'deliver_master')!), /KME_A +#\d+ +deliver_master +sae:SAE_A +slaves SAE_C; link A-B; relayed to KME_B/);
  const stranger = await traceKey({ ...target, ...net.pki.saes.SAE_A! }, keyId);
  t.equal(stranger.unreachable.length, 3, "an SAE's certificate reads no log");
  t.match(stranger.unreachable[0]!.why, /HTTP 401/);
});

t.test("a rewritten history is a fork: the witness refuses it and says so in its log", async (t) => {
  const su = new pg.Client({ connectionString: a.db.url });
  await su.connect();
  try {
    // As a superuser of KME_A's database: change an old event, drop every seal; the sealer then seals the changed
    // history afresh, signed with KME_A's own keys — consistent with itself, not with what KME_B cosigned.
    await su.query('BEGIN');
    await su.query('SET LOCAL session_replication_role = replica');
    // Keep KME_A's running sealer out until the rewrite commits: a seal it inserted meanwhile (its snapshot still
    // seeing the old seals) would survive the DELETE and leave a hole, which fails cosigning before the witness is
    // even asked — caught too, but not the fork this test is about.
    await su.query('LOCK TABLE audit_seal IN SHARE ROW EXCLUSIVE MODE');
    await su.query(`UPDATE audit_event SET body = replace(body, '"outcome":"ok"', '"outcome":"failed"') WHERE seq = (SELECT min(seq) FROM audit_event WHERE operation = 'deliver_master')`);
    await su.query('DELETE FROM audit_seal');
    await su.query('COMMIT');
  } finally {
    await su.end();
  }
  await traffic();
  await sealAll(a);
  await t.rejects(cosign(), PeerRefusedError);
  await cosign().catch((e: Error) => t.match(e.message, /not cosigned: it does not extend the checkpoint of size \d+ cosigned before/));
  const refused = await b.query(`SELECT body FROM audit_event WHERE operation = 'witness' AND outcome = 'refused'`);
  t.ok(refused.length >= 1, "the refusal is in KME_B's log");
  t.match(b.logs(), /custody log of KME_A forked\?/);
});

import t from 'tap';
import type { EtsiClient, Response } from '../helpers/client.js';
import { etsiErrorProblem, windows } from '../helpers/etsi.js';
import { PAIR, startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { countedAndAvailable, poolViolations } from '../helpers/pool-state.js';

// Masters at BOTH ends of one link ask for keys at the same time, many connections each: no material is ever
// handed to two requests, whichever end they asked at; every slave gets exactly its master's keys from its own KME;
// the two databases agree position by position. Real KMEs, real TLS, separate databases.

const CLIENTS_PER_END = 12;
const REQUESTS_PER_END = 360;

let net: TestNetwork;
t.before(async () => {
  net = await startTestNetwork({
    ...PAIR,
    keys: { max_key_count: 3_000 },
    // Generous on this shared 2-core machine: this test is about who gets which material, not about latency.
    network: { peer_timeout_ms: 10_000 },
    requests: { deadline_ms: 20_000 },
    fill: 1_000,
  });
  t.comment(`databases: ${net.kme('KME_A').db.kind}`);
});
t.teardown(() => net?.close());

type Key = { key_ID: string; key: string };
interface Delivered {
  master: string;
  slave: string;
  size: number;
  keys: Key[];
}

async function drive(master: string, slave: string, clients: EtsiClient[], out: Delivered[], failed: Response[], errors: string[]) {
  let next = 0;
  await Promise.all(
    clients.map(async (c) => {
      for (let i = next++; i < REQUESTS_PER_END; i = next++) {
        const req = { number: i % 2 ? 1 : 4, size: i % 3 ? 256 : 512 };
        try {
          const res =
            i % 4 === 0
              ? await c.get(`/api/v1/keys/${slave}/enc_keys?number=${req.number}&size=${req.size}`)
              : await c.post(`/api/v1/keys/${slave}/enc_keys`, req);
          if (res.status === 200) out.push({ master, slave, size: req.size, keys: res.body.keys });
          else failed.push(res);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }),
  );
}

t.test(`${CLIENTS_PER_END} masters at each end, ${REQUESTS_PER_END} requests each, at once`, async (t) => {
  const atA = Array.from({ length: CLIENTS_PER_END }, () => net.client('SAE_A'));
  const atB = Array.from({ length: CLIENTS_PER_END }, () => net.client('SAE_B'));
  await Promise.all([...atA.map((c) => c.get('/api/v1/keys/SAE_B/status')), ...atB.map((c) => c.get('/api/v1/keys/SAE_A/status'))]);
  const delivered: Delivered[] = [];
  const failed: Response[] = [];
  const errors: string[] = [];
  const started = Date.now();
  await Promise.all([
    drive('SAE_A', 'SAE_B', atA, delivered, failed, errors),
    drive('SAE_B', 'SAE_A', atB, delivered, failed, errors),
  ]);
  t.comment(`${2 * REQUESTS_PER_END} requests in ${Date.now() - started} ms: ${delivered.length} × 200, ${failed.length} other`);
  t.same(errors, [], 'no request died on the wire');
  const reasons = new Map<string, number>();
  for (const r of failed) reasons.set(`${r.status} ${r.body?.message}`, (reasons.get(`${r.status} ${r.body?.message}`) ?? 0) + 1);
  for (const [why, n] of reasons) t.comment(`  ${n} × ${why}`);
  for (const r of failed) {
    const problem = etsiErrorProblem(r);
    if (problem) t.fail(problem);
    // Only an empty pool may refuse a request here: never an internal error, a timeout or a lost peer.
    if (r.status !== 503 || !/^not enough key material/.test(r.body?.message)) t.fail(`unexpected refusal ${r.status}: ${r.text}`);
  }
  t.ok(delivered.length >= REQUESTS_PER_END, `most requests served (${delivered.length})`);
  t.ok(delivered.some((d) => d.master === 'SAE_A') && delivered.some((d) => d.master === 'SAE_B'), 'both ends served');

  const all = delivered.flatMap((d) => d.keys);
  t.equal(new Set(all.map((k) => k.key_ID)).size, all.length, `no key_ID twice among ${all.length}`);
  const owner = new Map<string, string>();
  const shared: string[] = [];
  for (const key of all) {
    for (const w of windows(Buffer.from(key.key, 'base64'), 32)) {
      const seen = owner.get(w);
      if (seen !== undefined && seen !== key.key_ID) shared.push(`${seen} / ${key.key_ID}`);
      else owner.set(w, key.key_ID);
    }
  }
  t.same(shared.slice(0, 5), [], 'no 32-byte block of material in two keys, across both ends');

  // Every slave gets exactly its master's keys at its own KME (in chunks of the per-request maximum).
  const mismatches: string[] = [];
  for (const [slave, master] of [['SAE_B', 'SAE_A'], ['SAE_A', 'SAE_B']] as const) {
    const c = net.client(slave);
    const mine = delivered.filter((d) => d.slave === slave).flatMap((d) => d.keys);
    for (let i = 0; i < mine.length; i += 100) {
      const chunk = mine.slice(i, i + 100);
      const res = await c.post(`/api/v1/keys/${master}/dec_keys`, { key_IDs: chunk.map((k) => ({ key_ID: k.key_ID })) });
      if (res.status !== 200) mismatches.push(`${slave}: ${res.status} ${res.text.slice(0, 200)}`);
      else if (JSON.stringify(res.body.keys) !== JSON.stringify(chunk)) mismatches.push(`${slave}: different material`);
    }
  }
  t.same(mismatches, [], 'every slave fetched exactly the keys its master got');
});

t.test('the two databases agree: each key on the same positions, owned by its master\'s end', async (t) => {
  // Ownership from the device refs both ends record: positions [first, first + owner_split) are the primary's (KME_A).
  const q = `WITH primary_part AS (SELECT range_agg(int8range(first_seq, first_seq + owner_split)) AS p FROM link_ref)
             SELECT k.key_id::text AS key, k.origin_kme_id AS origin, k.seqs::text AS seqs,
                    k.seqs <@ p.p AS all_primary, k.seqs && p.p AS any_primary
               FROM qkd_key k, primary_part p WHERE k.seqs IS NOT NULL`;
  const a = new Map((await net.kme('KME_A').kms.db.query(q)).rows.map((r) => [r.key, r]));
  const b = new Map((await net.kme('KME_B').kms.db.query(q)).rows.map((r) => [r.key, r]));
  t.ok(a.size > 0 && a.size === b.size, `the same keys at both ends (${a.size} / ${b.size})`);
  const bad: string[] = [];
  for (const [key, ra] of a) {
    const rb = b.get(key);
    if (!rb) bad.push(`${key} missing at KME_B`);
    else if (ra.seqs !== rb.seqs) bad.push(`${key}: positions differ`);
    else if (ra.origin === 'KME_A' ? !ra.all_primary || !rb.all_primary : ra.any_primary || rb.any_primary) bad.push(`${key}: owned by the wrong end`);
  }
  t.same(bad.slice(0, 5), [], 'positions and ownership agree');
  for (const id of ['KME_A', 'KME_B']) {
    const { db } = net.kme(id).kms;
    const { counted, available } = await countedAndAvailable(db);
    t.equal(counted, available, `${id}: the count is exact (${available})`);
    const v = await poolViolations(db);
    t.same(v, { multiBound: 0, freeButBound: 0, wrongCount: 0, takenUnbound: 0 }, `${id}: no position bound twice, none free and bound, none lost`);
  }
});

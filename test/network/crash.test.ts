import t from 'tap';
import { eventually, sleep } from '../helpers/etsi.js';
import { startTestNetwork, type TestNetwork } from '../helpers/network.js';
import { heldMaterial } from '../helpers/pool-state.js';

// KMEs killed for real (SIGKILL of a `kms serve` child process on a SoftHSM2 token), then restarted on the same
// database: a KME killed between the peer's reservation and its answer to the master, and a trusted node killed in
// the middle of relays. Nothing is delivered twice or to an SAE that was not named, nothing stays reserved past
// its time-to-live, every end audits what it did, and the restarted KME carries on.

const TTL_S = 4;
const softhsm = (await import('../../hsm-mock/softhsm-token.js')).createSoftHsmToken;
const probe = softhsm((await import('node:fs')).mkdtempSync('/tmp/kms-probe-'), { label: 'probe' });
if ('skip' in probe) {
  t.comment(`crash tests skipped: ${probe.skip}`);
  t.test('KMEs killed for real', { skip: probe.skip }, () => {});
} else {
  await t.test('a KME killed between reserve and answer', async (t) => {
    const net = await startTestNetwork({
      kmes: [
        { id: 'KME_A', saes: ['SAE_A'], process: true },
        { id: 'KME_B', saes: ['SAE_B'] },
      ],
      links: [{ id: 'A-B', ends: ['KME_A', 'KME_B'] }],
      keys: { max_key_count: 600, key_ttl_seconds: TTL_S },
      network: { peer_timeout_ms: 10_000 },
      fill: 200,
    });
    t.teardown(() => net.close());
    const b = net.kme('KME_B');
    // KME_B answers the reservation only when the test says so: KME_A is killed while it waits (a test double
    // around the real handler, standing in for a slow network; the reservation itself is real).
    const service = b.kms.network.peerService;
    const real = service.extKeys.bind(service);
    let reserved: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    service.extKeys = async (from, body) => {
      const ack = await real(from, body);
      reserved = ack.acks.flatMap((a) => (a.status === 'relayed' ? a.key_ids : []));
      await gate;
      return ack;
    };
    const since = new Date();
    const pending = net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys?number=3').then(
      (r) => r.status,
      () => 0,
    );
    await eventually(async () => reserved.length > 0, 10_000);
    t.equal(reserved.length, 3, 'KME_B reserved three keys for SAE_B');
    await net.kme('KME_A').kill!();
    release();
    service.extKeys = real;
    t.not(await pending, 200, 'the master never got those keys');

    await net.kme('KME_A').restart();
    const atA = await eventually(async () => {
      const rows = await net.kme('KME_A').query(`SELECT state FROM qkd_key WHERE key_id = ANY($1::uuid[])`, [reserved]);
      return rows.length === 3 && rows.every((r) => r.state === 'EXPIRED') ? rows : undefined;
    }, (TTL_S + 8) * 1000);
    t.ok(atA, 'the restarted KME_A expired its reservation');
    const atB = await eventually(async () => {
      const rows = await b.query(`SELECT state FROM qkd_key WHERE key_id = ANY($1::uuid[])`, [reserved]);
      return rows.length === 3 && rows.every((r) => r.state === 'EXPIRED') ? rows : undefined;
    }, (TTL_S + 8) * 1000);
    t.ok(atB, 'KME_B expired its reservation');
    for (const id of ['KME_A', 'KME_B']) {
      const events = await net.kme(id).query(
        `SELECT count(*)::int AS n FROM audit_event WHERE at >= $1 AND operation = 'expire' AND key_ids && $2::uuid[]`,
        [since, reserved],
      );
      t.ok(events[0]!.n >= 1, `${id} audited the expiry`);
      const db = { query: async (sql: string, params?: unknown[]) => ({ rows: await net.kme(id).query(sql, params) }) };
      const erased = await eventually(async () => (await heldMaterial(db, reserved)) === 0, 5_000);
      t.ok(erased, `${id}: their material erased (the KME's eraser passes every second)`);
    }
    const dec = await net.client('SAE_B').post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: reserved.map((key_ID) => ({ key_ID })) });
    t.equal(dec.status, 400, 'the slave can never fetch them');
    const fresh = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
    t.equal(fresh.status, 200, 'the restarted KME_A serves new keys');
    const again = await net.client('SAE_B').get(`/api/v1/keys/SAE_A/dec_keys?key_ID=${fresh.body?.keys?.[0]?.key_ID}`);
    t.same(again.body, fresh.body, 'and the slave gets them');
  });

  await t.test('a trusted node killed in the middle of relays', async (t) => {
    const net = await startTestNetwork({
      kmes: [
        { id: 'KME_A', saes: ['SAE_A'] },
        { id: 'KME_B', saes: ['SAE_B'], process: true },
        { id: 'KME_C', saes: ['SAE_C'] },
      ],
      links: [
        { id: 'A-B', ends: ['KME_A', 'KME_B'] },
        { id: 'B-C', ends: ['KME_B', 'KME_C'] },
      ],
      keys: { max_key_count: 1_000, key_ttl_seconds: TTL_S },
      network: { peer_timeout_ms: 3_000 },
      fill: 300,
    });
    t.teardown(() => net.close());
    const got: Array<{ key_ID: string; key: string }> = [];
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    let running = true;
    const slave = net.client('SAE_C');
    // The slave fetches each key as soon as its master has it (well within the time-to-live).
    const masters = Array.from({ length: 6 }, async () => {
      const c = net.client('SAE_A');
      while (running) {
        const r = await c.get('/api/v1/keys/SAE_C/enc_keys?number=2').catch(() => ({ status: 0, body: undefined, text: '' }));
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status !== 200) {
          await sleep(50);
          continue;
        }
        got.push(...r.body.keys);
        const res = await slave.post('/api/v1/keys/SAE_A/dec_keys', { key_IDs: r.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
        if (res.status !== 200 || JSON.stringify(res.body.keys) !== JSON.stringify(r.body.keys)) bad.push(`${res.status} ${res.text.slice(0, 120)}`);
      }
    });
    await eventually(async () => got.length >= 20, 20_000);
    await net.kme('KME_B').kill!();
    await sleep(1_000);
    await net.kme('KME_B').restart();
    await eventually(async () => (statuses.get(200) ?? 0) > 0 && got.length >= 60, 30_000);
    running = false;
    await Promise.all(masters);
    t.comment(`answers: ${[...statuses].map(([s, n]) => `${n} × ${s}`).join(', ')}`);
    t.ok(got.length >= 60, `keys delivered before and after the crash (${got.length})`);
    t.equal(new Set(got.map((k) => k.key_ID)).size, got.length, 'no key_ID twice');
    t.equal(new Set(got.map((k) => k.key)).size, got.length, 'no key twice');

    // Every key the master got was at KME_C for its slave; nothing else there stays alive past its time-to-live.
    t.same(bad, [], 'SAE_C fetched exactly what SAE_A got, every time');
    const delivered = new Set(got.map((k) => k.key_ID));
    await sleep((TTL_S + 2) * 1000);
    for (const id of ['KME_A', 'KME_B', 'KME_C']) {
      const live = await net.kme(id).query(`SELECT key_id::text AS id FROM qkd_key WHERE state IN ('RESERVED', 'DELIVERED')`);
      t.same(live.filter((r) => !delivered.has(r.id)), [], `${id}: nothing the master did not get is still alive`);
      const ciphertext = await net.kme(id).query(`SELECT count(*)::int AS n FROM qkd_key WHERE wrapped IS NOT NULL`);
      t.equal(ciphertext[0]!.n, 0, `${id}: no relayed key material left`);
    }
  });
}

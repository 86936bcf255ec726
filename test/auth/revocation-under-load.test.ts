import t from 'tap';
import { changePrincipalStatus } from '../../src/store/principals.js';
import { EtsiClient, answered } from '../helpers/client.js';
import { sleep } from '../helpers/etsi.js';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 13 items 2 and 7: "a revoked or suspended SAE gets no key within 1 s, on new and on open keep-alive
// connections", under load. Masters hammer enc_keys over keep-alive connections (and one over a fresh connection per
// request) while an operator suspends one through the admin API, and another is revoked by a different process
// straight in the shared database (this KME learns it by polling). After the change, no request of that SAE sent
// more than a second later gets a key — by the answers and by the custody log — and the other SAEs keep being served.

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 4000 }, rate: 100_000_000 });
});
t.teardown(() => k?.close());

/** A client that opens a new connection for every request, as most public ETSI 014 clients do. */
function fresh(sae: string): EtsiClient {
  const c = new EtsiClient(k.kms.url, k.pki.ca, k.pki.saes[sae]!, { keepAlive: false });
  t.teardown(() => c.close());
  return c;
}

interface Shot {
  sentAt: number;
  status: number;
}

/** Requests keys for SAE_B in `loops` concurrent loops until `stop()` says so; returns every answer with its send time. */
function hammer(client: () => EtsiClient, loops: number, stop: () => boolean): Promise<Shot[]> {
  const shots: Shot[] = [];
  return Promise.all(
    Array.from({ length: loops }, async () => {
      const c = client();
      while (!stop()) {
        const sentAt = Date.now();
        const res = await c.get('/api/v1/keys/SAE_B/enc_keys');
        shots.push({ sentAt, status: res.status });
      }
    }),
  ).then(() => shots);
}

async function deliveriesTo(sae: string, after: number): Promise<number> {
  const { rows } = await k.kms.db.query(
    `SELECT count(*)::int AS n FROM audit_event WHERE operation = 'deliver_master' AND outcome = 'ok' AND actor = $1 AND at > $2`,
    [`sae:${sae}`, new Date(after)],
  );
  return rows[0].n;
}

for (const how of ['suspended by an operator through the admin API', 'revoked by another process in the shared database'] as const) {
  t.test(`an SAE ${how} gets no key within 1 s, while the others are served`, async (t) => {
    const target = how.startsWith('suspended') ? 'SAE_D' : 'SAE_C';
    let done = false;
    const targetLoad = hammer(() => k.client(target), 8, () => done);
    const freshLoad = hammer(() => fresh(target), 1, () => done);
    const bystanders = hammer(() => k.client('SAE_A'), 4, () => done);
    await sleep(800);
    let changedAt: number;
    if (target === 'SAE_D') {
      const res = await k.client('OPERATOR_1').post(`/admin/v1/saes/${target}/suspend`, { reason: 'under load' });
      t.equal(res.status, 200, answered(res));
      changedAt = Date.now();
    } else {
      await changePrincipalStatus(k.kms.db, 'sae', target, 'revoke', { actor: 'operator:OPERATOR_2' }, 'under load, from another process');
      changedAt = Date.now();
    }
    await sleep(2_000);
    done = true;
    const shots = [...(await targetLoad), ...(await freshLoad)];
    const before = shots.filter((s) => s.status === 200 && s.sentAt < changedAt).length;
    const late = shots.filter((s) => s.status === 200 && s.sentAt > changedAt + 1_000);
    const refused = shots.filter((s) => s.status === 401 && s.sentAt > changedAt);
    t.ok(before > 0, `${target} was served before the change (${before} keys)`);
    t.same(late, [], `no key for ${target} on a request sent more than 1 s after the change`);
    t.ok(refused.length > 0, `${refused.length} requests refused with 401 after the change`);
    t.equal(await deliveriesTo(target, changedAt + 1_000), 0, 'and the custody log shows no delivery to it after that second');
    const others = await bystanders;
    t.ok(others.filter((s) => s.status === 200 && s.sentAt > changedAt).length > 0, 'SAE_A kept being served');
    t.same(others.filter((s) => s.status !== 200 && s.status !== 503), [], 'SAE_A got no refusal');
  });
}

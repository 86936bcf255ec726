import t from 'tap';
import { LifecycleReplay } from '../../src/audit/lifecycle-replay.js';

// The key lifecycle that `kms audit verify` replays over a custody log (src/audit/lifecycle-replay.ts): the paths
// real KMEs write (loopback, relayed with the master's reservation, a peer's reservation) pass; each broken rule is
// named.

const K = '2bfca171-4155-4cc5-8213-70fd84cc629b';
const ingest = { operation: 'ingest', outcome: 'ok', actor: 'kme:KME_A', detail: { link_id: 'L' } };
const ev = (operation: string, actor: string, detail: Record<string, unknown> = {}, outcome = 'ok') => ({ operation, outcome, actor, key_ids: [K], detail });

function replay(events: object[], partial = false): string | undefined {
  const r = new LifecycleReplay(partial);
  for (const [i, e] of events.entries()) {
    const wrong = r.apply(i + 1, e);
    if (wrong) return `seq ${i + 1}: ${wrong}`;
  }
  return undefined;
}

t.test('the paths KMEs write pass', async (t) => {
  const loopback = [ingest, ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_B'] }), ev('deliver_slave', 'sae:SAE_B'), ev('destroy', 'sae:SAE_B')];
  t.equal(replay(loopback), undefined, 'loopback: master, slave, destroy');
  const relayedAtMaster = [ingest, ev('reserve', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_C'] }), ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_C'] })];
  t.equal(replay(relayedAtMaster), undefined, "the master's KME: reserved by the master's request, then handed to it");
  const atPeer = [ingest, ev('reserve', 'kme:KME_A', { link_id: 'L', local_slaves: ['SAE_C'] }), ev('deliver_slave', 'sae:SAE_C'), ev('destroy', 'sae:SAE_C')];
  t.equal(replay(atPeer), undefined, "the slave's KME");
  t.equal(replay([ev('deliver_slave', 'sae:SAE_C')], true), undefined, 'a partial bundle: a key bound before it');
  const held = [ingest, ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_B'] }), ev('suspend', 'operator:OP'), ev('resume', 'operator:OP'), ev('deliver_slave', 'sae:SAE_B')];
  t.equal(replay(held), undefined, 'held by an operator, resumed, then fetched');
  t.equal(replay([...loopback, ev('revoke', 'operator:OP')]), undefined, 'a key revoked after it ended (recorded as compromised)');
  const fallback = { link_id: 'L', slaves: ['SAE_B'], origin: 'pqc_fallback' };
  t.equal(replay([ev('deliver_master', 'sae:SAE_A', fallback), ev('deliver_slave', 'sae:SAE_B')]), undefined, 'a fallback key: made, not ingested');
  t.match(replay([ev('deliver_master', 'sae:SAE_A', fallback), ev('deliver_master', 'sae:SAE_A', fallback)]), /bound a second time|twice/, 'and still bound once');
  t.equal(replay([ingest, ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_B'] }, 'refused'), ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_B'] })]), undefined, 'refused events change nothing');
});

t.test('each broken rule is named', async (t) => {
  const master = ev('deliver_master', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_B'] });
  t.match(replay([ingest, master, ev('deliver_slave', 'sae:SAE_B'), ev('deliver_slave', 'sae:SAE_B')]), /^seq 4: .* delivered to SAE_B twice/);
  t.match(replay([ingest, master, ev('deliver_slave', 'sae:SAE_D')]), /^seq 3: .* SAE_D, which was not named/);
  t.match(replay([master]), /^seq 1: .* link L, on which nothing was ingested before/);
  t.match(replay([ingest, master, ev('expire', 'kme:KME_A'), ev('deliver_slave', 'sae:SAE_B')]), /^seq 4: .* after its expire at seq 3/);
  t.match(replay([ingest, master, master]), /^seq 3: .* handed to its master twice/);
  t.match(replay([ingest, ev('reserve', 'kme:KME_B', { link_id: 'L', local_slaves: ['SAE_C'] }), ev('reserve', 'kme:KME_B', { link_id: 'L', local_slaves: ['SAE_C'] })]), /^seq 3: .* bound a second time \(first at seq 2\)/);
  t.match(replay([ingest, ev('reserve', 'sae:SAE_A', { link_id: 'L', slaves: ['SAE_C'] }), ev('deliver_master', 'sae:SAE_D', { link_id: 'L', slaves: ['SAE_C'] })]), /^seq 3: .* handed to SAE_D, but reserved for SAE_A/);
  t.match(replay([ev('deliver_slave', 'sae:SAE_C')]), /^seq 1: .* never bound at this KME/);
  t.match(replay([ingest, master, ev('suspend', 'operator:OP'), ev('deliver_slave', 'sae:SAE_B')]), /^seq 4: .* while an operator held it \(suspended at seq 3\)/);
  t.match(replay([ingest, master, ev('revoke', 'operator:OP'), ev('deliver_slave', 'sae:SAE_B')]), /^seq 4: .* after its revoke at seq 3/);
});

// Phases g–j: keys across KMEs (the network of network.ts), each against the same reference server with the same
// request shape, and each the cross-KME counterpart of a single-KME phase (g/b, h/d, i/c, j/b).
import type { Identity, tlsFor } from './client.js';
import { allowanceFor, decKeysRun, fetchKeyIds, twoServers, type Server } from './measure.js';
import type { Network } from './network.js';
import { RELAY_KEYS } from './network.js';
import type { Phase } from './report.js';
import { AUTOCANNON_RPS, ENC1, PHASES } from './settings.js';
import { enter } from './timeline.js';

// Keys each phase may take from KME_A's pool on A-B (warm-up included); phase i gets whatever the others leave.
export const NETWORK_PLAN: Record<string, number> = { g: 40_000, h: 40_000, j: RELAY_KEYS };

export interface NetworkTarget {
  net: Network;
  referenceUrl: string;
  A: Identity;
  tlsA: ReturnType<typeof tlsFor>;
  tlsB: ReturnType<typeof tlsFor>;
}

export async function networkPhases(t: NetworkTarget, record: (p: Phase) => void): Promise<void> {
  const { net, tlsA, tlsB } = t;
  // Zero non-2xx answers are expected; a KME that voids keys logs why (warn), and the log summary shows it.
  const done = (p: Phase) => {
    if (p.kme?.non2xx && p.id !== 'h') {
      p.notes.push(`${p.kme.non2xx} non-2xx answers ${JSON.stringify(p.kme.statusCodes)}: look at the KME logs below (a void says why)`);
    }
    record(p);
  };
  const at = (kme: keyof Network['urls']): Record<Server, string> => ({ kme: net.urls[kme], reference: t.referenceUrl });
  const allowance = allowanceFor(NETWORK_PLAN, net.storedDirect);
  const pool = (id: string, now: number, keys: number, what = 'A→B') =>
    console.log(`\n[${id}] ${what} pool ${now.toLocaleString('en-US')} keys; this phase may use ${keys.toLocaleString('en-US')}`);

  if (PHASES.has('g')) {
    enter('g'); // a timeline window per phase, for the RSS samples
    const { now, keys } = await allowance('g');
    const phase: Phase = {
      id: 'g',
      title: 'GET enc_keys?number=1 (256 bits) at KME_A for SAE_B at KME_B (direct cross-KME)',
      keysPerRequest: 1,
      rpsMethod: AUTOCANNON_RPS,
      counterpart: 'b',
      notes: [],
    };
    pool('g', now, keys);
    await twoServers(phase, (s) => ({ url: at('KME_A')[s], tls: tlsA, path: ENC1 }), keys); // b's request, at KME_A
    done(phase);
  }

  if (PHASES.has('h')) {
    enter('h');
    const { keys } = await allowance('h');
    const phase: Phase = {
      id: 'h',
      title: 'GET dec_keys?key_ID=… at KME_B (each ID once, as SAE_B; keys SAE_A got at KME_A)',
      keysPerRequest: 1,
      rpsMethod: AUTOCANNON_RPS,
      counterpart: 'd',
      notes: [],
    };
    // A refusal while fetching (a 503 under load) shortens this phase rather than ending the benchmark.
    const ids = await fetchKeyIds(net.urls.KME_A, t.A, keys, { slave: 'SAE_B', label: 'h', notes: phase.notes });
    await decKeysRun(phase, ids, { urls: at('KME_B'), tls: tlsB, master: 'SAE_A' });
    done(phase);
  }

  if (PHASES.has('i')) {
    enter('i');
    const { now, keys } = await allowance('i');
    const phase: Phase = {
      id: 'i',
      title: 'POST enc_keys {number:128,size:256} at KME_A for SAE_B at KME_B',
      keysPerRequest: 128,
      rpsMethod: AUTOCANNON_RPS,
      counterpart: 'c',
      notes: [],
    };
    pool('i', now, keys);
    await twoServers(
      phase,
      (s) => ({ url: at('KME_A')[s], tls: tlsA, method: 'POST', path: '/api/v1/keys/SAE_B/enc_keys', body: { number: 128, size: 256 } }),
      keys,
    );
    done(phase);
  }

  if (PHASES.has('j')) {
    enter('j');
    // Bounded by KME_A's material on A-B and by KME_B's pads on B-C (its reach towards KME_C).
    const { now, keys } = await allowanceFor(NETWORK_PLAN, net.storedRelayed)('j');
    const phase: Phase = {
      id: 'j',
      title: 'GET enc_keys?number=1 (256 bits) at KME_A for SAE_C at KME_C (relayed through KME_B)',
      keysPerRequest: 1,
      rpsMethod: AUTOCANNON_RPS,
      counterpart: 'b',
      notes: [],
    };
    pool('j', now, keys, 'A→C');
    await twoServers(phase, (s) => ({ url: at('KME_A')[s], tls: tlsA, path: '/api/v1/keys/SAE_C/enc_keys?number=1&size=256' }), keys);
    done(phase);
  }
}

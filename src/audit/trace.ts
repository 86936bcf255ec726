import { HttpJsonError, JsonClient } from '../http/json-client.js';

/** Where to find the KMEs of a network and the auditor identity that may read their logs. */
export interface TraceTarget {
  kmes: Array<{ id: string; url: string }>;
  ca: string;
  cert: string;
  key: string;
}

export interface TracedEvent {
  kme: string;
  seq: number;
  sealed: boolean;
  event: { at?: string; actor?: string; operation?: string; outcome?: string; detail?: Record<string, unknown> };
}

type EventsPage = { events: Array<{ seq: number; sealed: boolean; event: TracedEvent['event'] }>; next_from_seq?: number };

/**
 * One key's custody chain across KMEs: every event naming the key_ID in each KME's custody log, read through the
 * KMEs' auditor APIs, merged in order of time (each KME's own order where times tie). A KME that cannot be read is
 * reported, not skipped silently.
 */
export async function traceKey(target: TraceTarget, keyId: string): Promise<{ events: TracedEvent[]; unreachable: Array<{ kme: string; why: string }> }> {
  const client = new JsonClient(target);
  const events: TracedEvent[] = [];
  const unreachable: Array<{ kme: string; why: string }> = [];
  try {
    await Promise.all(
      target.kmes.map(async (kme) => {
        try {
          for (let from: number | undefined = 1; from !== undefined; ) {
            const page: EventsPage = await client.call<EventsPage>('GET', `${kme.url}/audit/v1/events?key_id=${encodeURIComponent(keyId)}&from_seq=${from}&limit=1000`);
            for (const e of page.events) events.push({ kme: kme.id, ...e });
            from = page.next_from_seq;
          }
        } catch (e) {
          unreachable.push({ kme: kme.id, why: e instanceof HttpJsonError && e.status ? `HTTP ${e.status}: ${e.message}` : (e as Error).message });
        }
      }),
    );
  } finally {
    client.close();
  }
  const order = new Map(target.kmes.map((k, i) => [k.id, i]));
  events.sort((a, b) => String(a.event.at).localeCompare(String(b.event.at)) || order.get(a.kme)! - order.get(b.kme)! || a.seq - b.seq);
  return { events, unreachable };
}

/** One line per event, for people. */
export function traceLine(e: TracedEvent): string {
  const d = e.event.detail ?? {};
  const extra = [
    Array.isArray(d.slaves) ? `slaves ${d.slaves.join(',')}` : '',
    Array.isArray(d.local_slaves) ? `for ${d.local_slaves.join(',') || '(no slave here)'}` : '',
    d.link_id ? `link ${String(d.link_id)}` : '',
    d.origin === 'pqc_fallback' ? `fallback key (${String(d.kem ?? 'no QKD material')})` : '',
    Array.isArray(d.relayed_to) && d.relayed_to.length ? `relayed to ${d.relayed_to.join(',')}` : '',
    d.reason ? String(d.reason) : '',
  ].filter(Boolean);
  return [
    e.event.at ?? '?',
    e.kme.padEnd(6),
    `#${e.seq}`.padEnd(7),
    `${e.event.operation ?? '?'}${e.event.outcome === 'ok' ? '' : ` (${e.event.outcome})`}`.padEnd(15),
    (e.event.actor ?? '?').padEnd(12),
    extra.join('; '),
    e.sealed ? '' : '[not yet sealed]',
  ]
    .filter((x) => x !== '')
    .join('  ');
}

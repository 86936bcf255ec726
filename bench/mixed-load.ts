// The soak's load: the four kinds of ETSI 014 call a KME serves, at once, open loop at fixed rates (so that a
// slowing KME shows as latency and skipped requests, not as a quieter test): enc_keys for one key and for 128 keys
// as SAE_A, dec_keys as SAE_B for keys SAE_A got (each key_ID once), and status. Counts and latencies are kept per
// interval, so the soak can print them beside each memory sample.
import { JsonClient, type Identity } from './client.js';
import { dueBy } from './load.js';

export const KINDS = ['enc1', 'enc128', 'dec', 'status'] as const;
export type Kind = (typeof KINDS)[number];
/** Requests per second of each kind. */
export type Mix = Record<Kind, number>;

export interface KindStats {
  ok: number;
  non2xx: Record<string, number>;
  errors: number;
  /** Scheduled but not sent: too many requests in flight (the KME is not keeping up). */
  skipped: number;
  p50Ms: number;
  p99Ms: number;
}

/** Requests in flight beyond which the load skips instead of sending: a stalled KME must not grow the soak itself. */
const MAX_IN_FLIGHT = 1024;
/** key_IDs kept for dec_keys; enc_keys for one key supplies more than dec_keys uses at the default mix. */
const MAX_IDS = 20_000;

const emptyStats = () => ({ ok: 0, non2xx: {} as Record<string, number>, errors: 0, skipped: 0, latencies: [] as number[] });

export class MixedLoad {
  /** One keep-alive client (16 connections) per kind: a slow kind does not hold up the others' connections. */
  private readonly clients: Record<Kind, JsonClient>;
  private readonly ids: string[] = [];
  private interval = Object.fromEntries(KINDS.map((k) => [k, emptyStats()])) as Record<Kind, ReturnType<typeof emptyStats>>;
  private readonly inFlight = new Set<Promise<void>>();
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(
    url: string,
    master: Identity,
    slave: Identity,
    private readonly mix: Mix,
  ) {
    this.clients = {
      enc1: new JsonClient(url, master),
      enc128: new JsonClient(url, master),
      dec: new JsonClient(url, slave),
      status: new JsonClient(url, master),
    };
  }

  start(): void {
    this.running = true;
    this.loop = this.schedule();
  }

  /** Stops sending, waits for what is in flight (each call times out on its own), and closes the connections. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await Promise.all(this.inFlight);
    for (const c of Object.values(this.clients)) c.close();
  }

  /** What happened since the last call, per kind. */
  takeInterval(): Record<Kind, KindStats> {
    const taken = this.interval;
    this.interval = Object.fromEntries(KINDS.map((k) => [k, emptyStats()])) as typeof taken;
    return Object.fromEntries(
      KINDS.map((k) => {
        const s = taken[k];
        const sorted = s.latencies.sort((a, b) => a - b);
        const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : 0);
        return [k, { ok: s.ok, non2xx: s.non2xx, errors: s.errors, skipped: s.skipped, p50Ms: pct(50), p99Ms: pct(99) }];
      }),
    ) as Record<Kind, KindStats>;
  }

  private async schedule(): Promise<void> {
    const start = performance.now();
    const sent = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
    while (this.running) {
      const elapsed = performance.now() - start;
      for (const kind of KINDS) {
        const due = dueBy(elapsed, this.mix[kind]);
        for (; sent[kind] < due; sent[kind]++) {
          const scheduled = start + (sent[kind] * 1000) / this.mix[kind]; // latency counts from here
          if (this.inFlight.size >= MAX_IN_FLIGHT) this.interval[kind].skipped++;
          else this.send(kind, scheduled);
        }
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  private send(kind: Kind, scheduled: number): void {
    const client = this.clients[kind];
    let call: Promise<{ status: number; body: any }>;
    if (kind === 'enc1') call = client.call('GET', '/api/v1/keys/SAE_B/enc_keys?number=1&size=256');
    else if (kind === 'enc128') call = client.call('POST', '/api/v1/keys/SAE_B/enc_keys', { number: 128, size: 256 });
    else if (kind === 'status') call = client.call('GET', '/api/v1/keys/SAE_B/status');
    else {
      // The newest key_ID: the mix makes keys twice as fast as it fetches them, so taking the oldest would reach keys
      // past their time-to-live (300 s) after ten minutes, and the KME would rightly answer 400.
      const id = this.ids.pop();
      if (!id) {
        this.interval.dec.skipped++; // nothing to decrypt yet
        return;
      }
      call = client.call('GET', `/api/v1/keys/SAE_A/dec_keys?key_ID=${id}`);
    }
    const p = call.then(
      (r) => {
        const s = this.interval[kind];
        if (r.status !== 200) {
          s.non2xx[r.status] = (s.non2xx[r.status] ?? 0) + 1;
          return;
        }
        s.ok++;
        s.latencies.push(performance.now() - scheduled);
        if (kind === 'enc1' && this.ids.length < MAX_IDS) this.ids.push((r.body.keys as Array<{ key_ID: string }>)[0]!.key_ID);
      },
      () => {
        this.interval[kind].errors++;
      },
    );
    const tracked = p.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }
}

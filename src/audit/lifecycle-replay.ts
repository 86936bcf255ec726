/**
 * Replays the key lifecycle of one KME's custody log, event by event, and names the first event that breaks it:
 * - a key is bound once: reserved (`reserve`: by its master's request at the master's KME, or by a peer KME for
 *   this KME's slaves) or handed straight to its master (`deliver_master`), never twice;
 * - it is handed to its master at most once, by the master that reserved it, and not after it ended;
 * - its material comes from a link on which this KME ingested material before;
 * - a slave gets a key (`deliver_slave`) only if the key was bound here, named that slave, was not delivered to it
 *   already, was not destroyed, expired, voided, revoked or set aside before, and is not held (`suspend` without a
 *   `resume` since).
 * Only events with outcome "ok" change anything. What the log cannot show is not checked: which block positions a
 * key used (events carry key_IDs and counts, not positions).
 *
 * A bundle that starts after the beginning of the log (pruned history) may meet keys bound before it: with
 * `partial`, a slave delivery of a key not bound in the bundle is counted as "bound before this bundle" instead.
 */
export interface ReplayFigures {
  keysBound: number;
  slaveDeliveries: number;
  keysEnded: number;
  /** Slave deliveries of keys bound before a partial bundle's start. */
  boundBefore: number;
}

/**
 * What the replay holds per key, for the whole bundle: "bound a second time" and "delivered after destruction" must
 * be caught however late they come, so no key is forgotten. To keep that affordable over millions of keys, the state
 * is one flat object of a fixed shape (no optional fields, no nested objects), the slaves are short arrays rather
 * than Sets (a key names one or a few), and once a key ended its slave lists are dropped: every check after the end
 * stops at `endedSeq` before reaching them.
 */
interface KeyState {
  boundAt: number;
  /** The master SAE whose request bound it here (master's KME only). */
  master: string | undefined;
  /** Seq of its hand-over to the master; 0 while it was not handed over. */
  deliveredToMaster: number;
  /** Slaves named, and slaves that got it (NONE for none); NONE once it ended. */
  named: readonly string[];
  got: readonly string[];
  /** How it ended and at which seq; endedSeq 0 while it did not. */
  endedOp: string;
  endedSeq: number;
  /** Seq of the operator's hold on it, 0 while none is. */
  heldSeq: number;
}

const NONE: string[] = [];

const ENDINGS = new Set(['destroy', 'expire', 'void', 'set_aside', 'revoke']);

export class LifecycleReplay {
  private readonly keys = new Map<string, KeyState>();
  private readonly links = new Set<string>();
  readonly figures: ReplayFigures = { keysBound: 0, slaveDeliveries: 0, keysEnded: 0, boundBefore: 0 };

  constructor(private readonly partial: boolean) {}

  /** Applies one event; returns what is wrong with it, or undefined. */
  apply(seq: number, e: { operation?: unknown; outcome?: unknown; actor?: unknown; key_ids?: unknown; detail?: any }): string | undefined {
    if (e.outcome !== 'ok') return undefined;
    const ids = Array.isArray(e.key_ids) ? (e.key_ids as string[]) : [];
    const detail = e.detail ?? {};
    switch (e.operation) {
      case 'ingest':
        this.links.add(String(detail.link_id));
        return undefined;
      case 'deliver_master':
        return this.noIngest(ids, detail) ?? this.deliverToMaster(seq, ids, String(e.actor), detail);
      case 'reserve':
        return this.noIngest(ids, detail) ?? this.bind(seq, ids, reserveSlaves(detail), master(e.actor));
      case 'deliver_slave':
        return this.deliverToSlave(seq, ids, String(e.actor));
      case 'suspend':
      case 'resume':
        for (const id of ids) {
          const k = this.keys.get(id);
          if (k) k.heldSeq = e.operation === 'suspend' ? seq : 0;
        }
        return undefined;
      default:
        if (ENDINGS.has(String(e.operation))) {
          for (const id of ids) {
            const k = this.keys.get(id);
            if (k && !k.endedSeq) {
              k.endedOp = String(e.operation);
              k.endedSeq = seq;
              k.named = k.got = NONE;
              this.figures.keysEnded++;
            }
          }
        }
        return undefined;
    }
  }

  private noIngest(ids: string[], detail: Record<string, unknown>): string | undefined {
    // A fallback key's material was made by its master's KME (docs/operators.md, "When a link fails"), not ingested.
    if (this.partial || this.links.has(String(detail.link_id)) || detail.origin === 'pqc_fallback') return undefined;
    return `key ${ids[0]} takes material from link ${String(detail.link_id)}, on which nothing was ingested before`;
  }

  private bind(seq: number, ids: string[], slaves: string[], masterSae?: string): string | undefined {
    for (const id of ids) {
      const before = this.keys.get(id);
      if (before) return `key ${id} is bound a second time (first at seq ${before.boundAt})`;
      this.add(id, seq, slaves, masterSae, 0);
    }
    return undefined;
  }

  /** Records a key bound at `seq` (the caller knows it was not bound before). */
  private add(id: string, seq: number, slaves: readonly string[], masterSae: string | undefined, deliveredToMaster: number): void {
    this.keys.set(id, { boundAt: seq, master: masterSae, deliveredToMaster, named: slaves, got: NONE, endedOp: '', endedSeq: 0, heldSeq: 0 });
    this.figures.keysBound++;
  }

  private deliverToMaster(seq: number, ids: string[], actor: string, detail: Record<string, unknown>): string | undefined {
    const sae = master(actor);
    const slaves = Array.isArray(detail.slaves) ? (detail.slaves as string[]) : NONE;
    for (const id of ids) {
      const k = this.keys.get(id);
      if (!k) {
        this.add(id, seq, slaves, sae, seq); // bound and handed over at once (one lookup: this is most of a log)
        continue;
      }
      if (k.deliveredToMaster) return `key ${id} was handed to its master twice (first at seq ${k.deliveredToMaster})`;
      if (k.master !== sae) return `key ${id} was handed to ${sae ?? actor}, but ${k.master ? `reserved for ${k.master}` : 'reserved for a peer KME'} at seq ${k.boundAt}`;
      if (k.endedSeq) return `key ${id} was handed to its master after its ${k.endedOp} at seq ${k.endedSeq}`;
      k.deliveredToMaster = seq;
    }
    return undefined;
  }

  private deliverToSlave(seq: number, ids: string[], actor: string): string | undefined {
    const sae = actor.startsWith('sae:') ? actor.slice(4) : actor;
    for (const id of ids) {
      const k = this.keys.get(id);
      if (!k) {
        if (this.partial) {
          this.figures.boundBefore++;
          continue;
        }
        return `key ${id} was delivered to ${sae} but never bound at this KME`;
      }
      if (k.endedSeq) return `key ${id} was delivered to ${sae} after its ${k.endedOp} at seq ${k.endedSeq}`;
      if (k.heldSeq) return `key ${id} was delivered to ${sae} while an operator held it (suspended at seq ${k.heldSeq})`;
      if (!k.named.includes(sae)) return `key ${id} was delivered to ${sae}, which was not named as its slave`;
      if (k.got.includes(sae)) return `key ${id} was delivered to ${sae} twice`;
      k.got = k.got === NONE ? [sae] : [...k.got, sae]; // exactly sized: most keys have one slave
      this.figures.slaveDeliveries++;
    }
    return undefined;
  }
}

/** The SAE an `sae:` actor names (a master's own request), or undefined for a KME. */
function master(actor: unknown): string | undefined {
  return typeof actor === 'string' && actor.startsWith('sae:') ? actor.slice(4) : undefined;
}

/** Who may fetch a reserved key here: the slaves named at the master's KME, this KME's slaves at a peer's. */
function reserveSlaves(detail: Record<string, unknown>): string[] {
  const list = Array.isArray(detail.local_slaves) ? detail.local_slaves : Array.isArray(detail.slaves) ? detail.slaves : [];
  return list.map(String);
}

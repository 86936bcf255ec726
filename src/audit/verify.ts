import { BUNDLE_FORMAT, splitEventLine, type BundleHeader } from './bundle.js';
import { parseCheckpoint, type Checkpoint } from './checkpoint.js';
import { gapLeafHex, eventLeafHex } from './leaves.js';
import { LifecycleReplay, type ReplayFigures } from './lifecycle-replay.js';
import { Frontier } from './merkle.js';
import { NoteFormatError, openNote, type NoteVerifier } from './signed-note.js';
import type { LogKeyAlgorithm } from './vkeys.js';

/** What verifying a bundle found. `problem` is the first thing wrong, with the sequence number it concerns. */
export interface VerifyReport {
  ok: boolean;
  origin?: string;
  /** Leaves covered by the last checkpoint that verified, and where the bundle started. */
  startSize: number;
  sealedSize: number;
  events: number;
  gaps: number;
  checkpoints: number;
  /** Events after the last checkpoint: present, but not yet covered by a signature. */
  unsealed: number;
  /** The algorithms whose signatures verified on every checkpoint. */
  signedWith: LogKeyAlgorithm[];
  lifecycle: ReplayFigures;
  /** Per pinned witness (by key name): how many checkpoints it cosigned, and the largest. */
  witnessed: Record<string, { checkpoints: number; lastSize: number }>;
  problem?: { seq?: number; message: string };
}

export interface VerifyOptions {
  /** The keys the auditor pinned: only these are trusted, whatever the bundle lists. */
  keys: Array<NoteVerifier & { algorithm: LogKeyAlgorithm; vkey: string }>;
  /** A checkpoint the auditor held before (a signed note): the bundle must extend it. */
  trustedCheckpoint?: string;
  /** Keys of witnesses (peer KMEs) whose cosignatures are checked; cosignatures by other keys are ignored. */
  witnesses?: NoteVerifier[];
}

/** Stands in the tree for a number the bundle lacks: no SHA-256 output is all zeros in practice. */
const MISSING = '0'.repeat(64);
/** Missing numbers in one run beyond which the verifier gives up at once rather than fill the gap. */
const MAX_MISSING_RUN = 100_000;

/**
 * How a missing number is named, wherever it is found: in the middle of a range or at its end. The same deletion must
 * read the same whether or not a seal happened to end right after it.
 */
const missingSeq = (seq: number, where: string): string => `seq ${seq} is missing (${where})`;

/** Of two problems (either may be absent), the one with the lower sequence number; the first when they tie. */
function earliest(a: Failed | undefined, b: Failed | undefined): Failed | undefined {
  if (!a || !b) return a ?? b;
  return (b.seq ?? Infinity) < (a.seq ?? Infinity) ? b : a;
}

class Failed extends Error {
  constructor(
    message: string,
    readonly seq?: number,
  ) {
    super(message);
  }
}

/**
 * Verifies an export bundle (src/audit/bundle.ts) line by line, with no database and in bounded memory (apart from
 * the lifecycle replay's table of keys): every checkpoint is signed by pinned keys of every pinned algorithm; the
 * tree recomputed from the events gives each checkpoint's root; no sequence number is missing, repeated or out of
 * order; a trusted earlier checkpoint is a prefix of this history; and the key lifecycle replays
 * (src/audit/lifecycle-replay.ts). It stops at the first checkpoint range that fails and names the earliest sequence
 * number wrong in it (a missing number or a broken lifecycle rule waits for the range's checkpoint, which may show an
 * earlier event changed).
 *
 * Where a checkpoint's root does not match, the sealer's own leaf hashes (in the checkpoint line) say which event
 * changed, if they still give the signed root. If they were rewritten too, only the checkpoint's range is known.
 */
export class BundleVerifier {
  private header: BundleHeader | undefined;
  private frontier = Frontier.empty();
  private rangeStart = 0; // tree size at the last checkpoint
  private rangeFrontier = Frontier.empty();
  private rangeLeaves: string[] = []; // in hex, see append
  /** The first number missing since the last checkpoint, reported once the range's checkpoint says nothing earlier. */
  private missing: { seq: number; message: string } | undefined;
  /** The first lifecycle rule broken, held likewise (the replay stops there). */
  private broken: Failed | undefined;
  private readonly report: VerifyReport;
  private replay = new LifecycleReplay(false);
  private trusted: Checkpoint | undefined;
  private trustedChecked = false;
  private ended = false;
  private lineNo = 0;
  /** Every checkpoint must carry a valid signature of each of these (see openCheckpoint). */
  private readonly algorithms: Set<LogKeyAlgorithm>;

  constructor(private readonly o: VerifyOptions) {
    if (o.keys.length === 0) throw new Error('no pinned keys: pass the log\'s verifier keys (kms audit keys prints them)');
    this.algorithms = new Set(o.keys.map((k) => k.algorithm));
    this.report = { ok: true, startSize: 0, sealedSize: 0, events: 0, gaps: 0, checkpoints: 0, unsealed: 0, signedWith: [], lifecycle: this.replay.figures, witnessed: {} };
  }

  /** Feeds one line; returns false once a problem was found (the rest need not be read). */
  line(text: string): boolean {
    if (!this.report.ok) return false;
    this.lineNo++;
    try {
      this.take(text);
      return true;
    } catch (err) {
      const e = err instanceof Failed ? err : new Failed(`line ${this.lineNo}: ${(err as Error).message}`);
      this.report.ok = false;
      this.report.problem = { ...(e.seq !== undefined ? { seq: e.seq } : {}), message: e.message };
      return false;
    }
  }

  /** After the last line: the report. */
  finish(): VerifyReport {
    if (this.report.ok) {
      try {
        if (!this.header) throw new Failed('the bundle is empty: no header line');
        const pending = earliest(this.missing && new Failed(this.missing.message, this.missing.seq), this.broken);
        if (pending) throw pending;
        if (!this.ended) throw new Failed('the bundle ends without its end line: it was cut short');
        if (this.trusted && !this.trustedChecked) {
          throw new Failed(`the trusted checkpoint covers ${this.trusted.size} leaves but this history ends at seq ${this.frontier.size}: events from seq ${this.frontier.size + 1} are missing (truncated)`, this.frontier.size + 1);
        }
      } catch (e) {
        this.report.ok = false;
        this.report.problem = { ...((e as Failed).seq !== undefined ? { seq: (e as Failed).seq } : {}), message: (e as Error).message };
      }
    }
    this.report.unsealed = this.rangeLeaves.length;
    this.report.signedWith = this.report.checkpoints > 0 ? [...this.algorithms].sort() : [];
    return this.report;
  }

  private take(text: string): void {
    if (this.ended) throw new Failed('a line after the end line');
    if (!this.header) return this.takeHeader(text);
    const ev = splitEventLine(text);
    if (ev) return this.takeEvent(ev.seq, ev.body);
    let v: { type?: unknown; seq?: unknown; size?: unknown; leaf_hashes?: unknown; note?: unknown; events?: unknown; gaps?: unknown; checkpoints?: unknown };
    try {
      v = JSON.parse(text);
    } catch {
      throw new Error('not JSON');
    }
    switch (v?.type) {
      case 'gap':
        return this.takeGap(Number(v.seq));
      case 'checkpoint':
        this.takeCheckpoint(Number(v.size), String(v.leaf_hashes ?? ''), String(v.note ?? ''));
        return this.takeCosignatures(Number(v.size), String(v.note ?? ''), (v as { cosignatures?: unknown }).cosignatures);
      case 'end':
        if (v.events !== this.report.events || v.gaps !== this.report.gaps || v.checkpoints !== this.report.checkpoints) {
          throw new Failed(`the end line counts ${String(v.events)} events, ${String(v.gaps)} gaps and ${String(v.checkpoints)} checkpoints; the bundle holds ${this.report.events}, ${this.report.gaps} and ${this.report.checkpoints}`);
        }
        this.ended = true;
        return;
      default:
        throw new Error(`unknown line type ${JSON.stringify(v?.type)?.slice(0, 30)}`);
    }
  }

  private takeHeader(text: string): void {
    let h: BundleHeader;
    try {
      h = JSON.parse(text);
    } catch {
      throw new Failed('not a custody bundle: the first line is not JSON');
    }
    if (h?.type !== 'header' || h.format !== BUNDLE_FORMAT) throw new Failed(`not a custody bundle: the first line is not a ${BUNDLE_FORMAT} header`);
    this.header = h;
    this.report.origin = h.origin;
    const start = h.start ?? { size: 0, frontier: '', checkpoint: null };
    if (start.size > 0) {
      const cp = this.openCheckpoint(String(start.checkpoint), start.size);
      this.frontier = Frontier.of(start.size, Buffer.from(start.frontier, 'base64'));
      if (cp.size !== start.size || !this.frontier.root().equals(cp.root)) throw new Failed(`the bundle's starting point (size ${start.size}) does not match its signed checkpoint`, start.size);
      this.replay = new LifecycleReplay(true);
      this.report.lifecycle = this.replay.figures;
    }
    this.rangeStart = this.frontier.size;
    this.rangeFrontier = this.frontier.copy();
    this.report.startSize = this.report.sealedSize = this.frontier.size;
    if (this.o.trustedCheckpoint) {
      this.trusted = this.openCheckpoint(this.o.trustedCheckpoint, undefined, 'the trusted checkpoint');
      if (this.trusted.origin !== h.origin) throw new Failed(`the trusted checkpoint is of log ${this.trusted.origin}, this bundle of ${h.origin}`);
      if (this.trusted.size < this.frontier.size) {
        throw new Failed(`the trusted checkpoint (size ${this.trusted.size}) precedes this bundle's start (size ${this.frontier.size}): verify the archived bundle that covers it`);
      }
      this.checkTrusted();
    }
  }

  /**
   * A missing number is not reported at once: the range's checkpoint may show that an earlier event of the range was
   * changed or moved (everything after an inserted event moves up, which leaves a number empty further on), and the
   * first thing wrong is what a verifier should name. So the missing numbers stand in the tree as MISSING leaves,
   * which no sealed leaf equals, and the checkpoint (or the end of the bundle) says which came first.
   */
  private expectSeq(seq: number): void {
    const next = this.frontier.size + 1;
    if (!Number.isSafeInteger(seq) || seq < 1) throw new Failed(`line ${this.lineNo}: no valid sequence number`);
    if (seq < next) throw new Failed(`seq ${seq} appears again, or out of order, after seq ${next - 1}`, seq);
    if (seq === next) return;
    this.missing ??= { seq: next, message: missingSeq(next, `the next line is seq ${seq}`) };
    if (seq - next > MAX_MISSING_RUN) throw new Failed(this.missing.message, this.missing.seq);
    for (let s = next; s < seq; s++) this.append(MISSING);
  }

  private takeEvent(seq: number, body: string): void {
    this.expectSeq(seq);
    let e;
    try {
      e = JSON.parse(body);
    } catch {
      throw new Failed(`seq ${seq}: the event body is not JSON`, seq);
    }
    if (typeof e !== 'object' || e === null || typeof e.actor !== 'string') throw new Failed(`seq ${seq}: not a custody event`, seq);
    this.append(eventLeafHex(body));
    this.report.events++;
    // Held until the range's checkpoint, like a missing number: an earlier event may prove changed there.
    const wrong = this.broken ? undefined : this.replay.apply(seq, e);
    if (wrong) this.broken = new Failed(`seq ${seq}: ${wrong}`, seq);
  }

  private takeGap(seq: number): void {
    this.expectSeq(seq);
    this.append(gapLeafHex(seq));
    this.report.gaps++;
  }

  /** Appends a leaf hash, in hex (see textLeafHex in src/audit/merkle.ts). */
  private append(h: string): void {
    this.frontier.appendHex(h);
    this.rangeLeaves.push(h);
    this.checkTrusted();
  }

  /** Once the history reaches the trusted checkpoint's size, its root there must be the trusted root. */
  private checkTrusted(): void {
    if (!this.trusted || this.trustedChecked || this.frontier.size !== this.trusted.size) return;
    if (!this.frontier.root().equals(this.trusted.root)) {
      throw new Failed(`the history up to seq ${this.trusted.size} is not the one of the trusted checkpoint: it was rewritten`, this.trusted.size);
    }
    this.trustedChecked = true;
  }

  private takeCheckpoint(size: number, leafHashesB64: string, note: string): void {
    const cp = this.openCheckpoint(note, size);
    if (cp.size !== size) throw new Failed(`the checkpoint line says size ${size}, its signed text ${cp.size}`, size);
    if (size !== this.frontier.size || !this.frontier.root().equals(cp.root)) throw earliest(this.mismatch(cp, Buffer.from(leafHashesB64, 'base64')), this.broken);
    if (this.broken) throw this.broken; // sealed as it stands: the log itself breaks the lifecycle
    this.rangeStart = size;
    this.rangeFrontier = this.frontier.copy();
    this.rangeLeaves = [];
    this.missing = undefined; // a range with a MISSING leaf cannot give a signed root: never reached with one
    this.report.sealedSize = size;
    this.report.checkpoints++;
  }

  /** Checks the cosignatures by pinned witnesses (any that fails rejects the bundle); others are ignored. */
  private takeCosignatures(size: number, note: string, cosignatures: unknown): void {
    const witnesses = this.o.witnesses ?? [];
    if (witnesses.length === 0 || !Array.isArray(cosignatures)) return;
    const text = note.slice(0, note.lastIndexOf('\n\n') + 1);
    for (const c of cosignatures as Array<{ signatures?: unknown }>) {
      let verifiedBy: string[];
      try {
        verifiedBy = openNote(`${text}\n${String(c.signatures ?? '')}`, witnesses).verifiedBy;
      } catch (e) {
        if (e instanceof NoteFormatError && /no signature by a trusted key/.test(e.message)) continue; // not a pinned witness
        throw new Failed(`a cosignature of the checkpoint of size ${size} does not verify (${(e as Error).message})`, size);
      }
      for (const name of new Set(verifiedBy.map((v) => v.slice(0, v.lastIndexOf('+'))))) {
        const w = (this.report.witnessed[name] ??= { checkpoints: 0, lastSize: 0 });
        w.checkpoints++;
        w.lastSize = size;
      }
    }
  }

  /**
   * What is wrong with the range a checkpoint closes, naming the first bad sequence number in it. The sealer's leaf
   * hashes are used only when they give the signed root (so they are what was signed); then the first leaf that
   * differs from them is the event that was changed, inserted, removed or moved.
   */
  private mismatch(cp: Checkpoint, sealedHashes: Buffer): Failed {
    const first = this.rangeStart + 1;
    const missing = this.missing;
    const sealedCount = cp.size - this.rangeStart;
    const sealed = (i: number) => sealedHashes.subarray(32 * i, 32 * i + 32);
    let genuine = false;
    if (sealedCount > 0 && sealedHashes.length === 32 * sealedCount) {
      const f = this.rangeFrontier.copy();
      for (let i = 0; i < sealedCount; i++) f.append(sealed(i));
      genuine = f.root().equals(cp.root);
    }
    if (genuine) {
      const i = this.rangeLeaves.findIndex((h, j) => j >= sealedCount || h !== sealed(j).toString('hex'));
      if (i >= 0) {
        const seq = first + i;
        if (this.rangeLeaves[i] === MISSING) return new Failed(missing!.message, seq);
        return new Failed(`seq ${seq}: the event is not the one sealed in the checkpoint of size ${cp.size} (changed, inserted, removed or moved)`, seq);
      }
    }
    if (missing) return new Failed(missing.message, missing.seq);
    if (this.frontier.size < cp.size) {
      const missing = this.frontier.size + 1;
      return new Failed(missingSeq(missing, `a checkpoint covers seq ${cp.size}; the events before it end at seq ${this.frontier.size}`), missing);
    }
    if (this.frontier.size > cp.size) {
      return new Failed(`seq ${cp.size + 1} comes before the checkpoint of size ${cp.size}: not sealed where it stands (inserted?)`, cp.size + 1);
    }
    return new Failed(`seqs ${first}–${cp.size}: the events do not give the root signed in the checkpoint of size ${cp.size}, and the sealed leaf hashes were altered too: something in this range was rewritten`, first);
  }

  private openCheckpoint(note: string, size: number | undefined, what = `the checkpoint of size ${size}`): Checkpoint {
    let cp: Checkpoint;
    try {
      cp = openSignedCheckpoint(note, this.o.keys);
    } catch (e) {
      const why = e instanceof NoteFormatError ? e.message : 'unreadable';
      throw new Failed(`${what} does not verify with the pinned keys (${why})`, size);
    }
    if (this.header && cp.origin !== this.header.origin) throw new Failed(`${what} is of log ${cp.origin}, not ${this.header.origin}`, size);
    return cp;
  }

}

/**
 * Opens a signed checkpoint with pinned keys: every algorithm among them must have a valid signature on it (a
 * post-quantum key pinned beside a classical one is required, not optional). Throws NoteFormatError saying why not.
 */
export function openSignedCheckpoint(note: string, keys: VerifyOptions['keys']): Checkpoint {
  const opened = openNote(note, keys);
  const by = new Set(opened.verifiedBy.map((who) => keys.find((k) => `${k.name}+${k.keyId.toString('hex')}` === who)!.algorithm));
  for (const a of new Set(keys.map((k) => k.algorithm))) {
    if (!by.has(a)) throw new NoteFormatError(`no valid ${a} signature by a pinned key`);
  }
  return parseCheckpoint(opened.text);
}

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';

/**
 * The export bundle of the custody log: JSON Lines (one JSON value per line, UTF-8), written in one pass and read in
 * one pass, so that a log of any length streams through `kms audit export` and `kms audit verify` in bounded memory.
 *
 *   {"type":"header","format":"qkms-custody-bundle/1","origin":…,"exported_at":…,"vkeys":[…],"start":{…}}
 *   {"type":"event","seq":1,"body":{…}}      the event's canonical body, verbatim (its bytes are the leaf)
 *   {"type":"gap","seq":3}                    a number whose transaction rolled back (sealed as a gap leaf)
 *   {"type":"checkpoint","size":4,"leaf_hashes":"<base64>","note":"<signed checkpoint>","cosignatures":[…]}
 *   … events, gaps and checkpoints in order of sequence number, up to the last checkpoint …
 *   {"type":"end","events":…,"gaps":…,"checkpoints":…}
 *
 * `start` is where the bundle begins: size 0 for a whole log, or, for what remains after older events were pruned
 * (or for a bundle exported from a later point), the size, the tree's right edge and the signed checkpoint there, so
 * that the verifier continues from the archived bundle that ended at that checkpoint. `leaf_hashes` are the leaves as
 * the sealer hashed them: they let the verifier name the one event that differs from what was sealed. `cosignatures`
 * (when peers witnessed the checkpoint) are each witness's signature lines for the note's text. `vkeys` are
 * the log's keys as the database lists them: the verifier trusts only the keys the auditor pinned.
 *
 * An event line is written as a fixed prefix, the body's bytes and "}", so the verifier hashes the body exactly as it
 * was stored without re-serializing it.
 */
export const BUNDLE_FORMAT = 'qkms-custody-bundle/1';

export interface BundleHeader {
  type: 'header';
  format: typeof BUNDLE_FORMAT;
  origin: string;
  exported_at: string;
  vkeys: string[];
  start: { size: number; frontier: string; checkpoint: string | null };
}

export const eventLine = (seq: number, body: string): string => `{"type":"event","seq":${seq},"body":${body}}`;
export const gapLine = (seq: number): string => `{"type":"gap","seq":${seq}}`;
export interface Cosignature {
  witness: string;
  /** Signature lines (signed-note format) over the checkpoint's text. */
  signatures: string;
}

export const checkpointLine = (size: number, leafHashes: Buffer, note: string, cosignatures: Cosignature[] = []): string =>
  JSON.stringify({ type: 'checkpoint', size, leaf_hashes: leafHashes.toString('base64'), note, ...(cosignatures.length ? { cosignatures } : {}) });
export const endLine = (counts: { events: number; gaps: number; checkpoints: number }): string => JSON.stringify({ type: 'end', ...counts });

const EVENT_PREFIX = /^\{"type":"event","seq":([1-9][0-9]{0,15}),"body":/;

/** Splits an event line into its number and the body's exact text; undefined when the line is not an event line. */
export function splitEventLine(line: string): { seq: number; body: string } | undefined {
  const m = EVENT_PREFIX.exec(line);
  if (!m || !line.endsWith('}')) return undefined;
  return { seq: Number(m[1]), body: line.slice(m[0].length, -1) };
}

/**
 * Feeds the lines of a bundle, decoded as UTF-8, to `take` until it returns false. Lines split as node:readline
 * splits them with crlfDelay Infinity (at \n, \r\n or a lone \r), but the text is cut from large chunks with
 * indexOf and handed over synchronously: readline's per-line events and async iteration cost more than verifying a
 * line does. A line longer than a chunk is gathered in pieces, so it costs linear time.
 */
export async function eachLine(input: AsyncIterable<string>, take: (line: string) => boolean): Promise<void> {
  let pending: string[] = [];
  const emit = (piece: string): boolean => {
    // Pieces end at \n (or the end of the input): a \r before it makes \r\n; any other \r ends a line of its own.
    const line = piece.charCodeAt(piece.length - 1) === 13 ? piece.slice(0, -1) : piece;
    if (!line.includes('\r')) return take(line);
    for (const part of line.split('\r')) if (!take(part)) return false;
    return true;
  };
  for await (const chunk of input) {
    let from = 0;
    let nl = chunk.indexOf('\n');
    if (nl < 0) {
      pending.push(chunk);
      continue;
    }
    if (pending.length > 0) {
      const head = pending.join('') + chunk.slice(0, nl);
      pending = [];
      if (!emit(head)) return;
      from = nl + 1;
      nl = chunk.indexOf('\n', from);
    }
    for (; nl >= 0; nl = chunk.indexOf('\n', from)) {
      if (!emit(chunk.slice(from, nl))) return;
      from = nl + 1;
    }
    if (from < chunk.length) pending.push(chunk.slice(from));
  }
  if (pending.length > 0) emit(pending.join('')); // the last line, without a newline
}

/**
 * Writes lines to a new file, one per line, waiting on the stream as it fills (a bundle may be larger than memory);
 * returns the SHA-256 of what was written. `exclusive` refuses a file that exists (an archive is never overwritten).
 */
export async function writeLinesToFile(path: string, lines: AsyncIterable<string>, opts: { exclusive?: boolean } = {}): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(path, { flags: opts.exclusive ? 'wx' : 'w' });
  await once(out, 'open');
  for await (const line of lines) {
    hash.update(line + '\n');
    if (!out.write(line + '\n')) await once(out, 'drain');
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  return hash.digest('hex');
}

/** Feeds a bundle file's lines to `take` (see eachLine); rejects with the file system's error if it cannot be opened. */
export async function eachLineOfFile(path: string, take: (line: string) => boolean): Promise<void> {
  const input = createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 20 });
  try {
    await once(input, 'open');
    await eachLine(input, take);
  } finally {
    input.destroy();
  }
}

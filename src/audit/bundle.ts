/**
 * The export bundle of the custody log: JSON Lines (one JSON value per line, UTF-8), written in one pass and read in
 * one pass, so that a log of any length streams through `kms audit export` and `kms audit verify` in bounded memory.
 *
 *   {"type":"header","format":"qkms-custody-bundle/1","origin":…,"exported_at":…,"vkeys":[…],"start":{…}}
 *   {"type":"event","seq":1,"body":{…}}      the event's canonical body, verbatim (its bytes are the leaf)
 *   {"type":"gap","seq":3}                    a number whose transaction rolled back (sealed as a gap leaf)
 *   {"type":"checkpoint","size":4,"leaf_hashes":"<base64>","note":"<signed checkpoint>","cosignatures":[…]}
 *   … events, gaps and checkpoints in order of sequence number; events after the last checkpoint are not yet sealed …
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

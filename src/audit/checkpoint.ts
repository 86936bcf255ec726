import { NoteFormatError } from './signed-note.js';

/**
 * The checkpoint of the custody log (c2sp.org/tlog-checkpoint): the text a signed note carries — the log's origin
 * (a name unique to this log), the tree size in decimal, and the RFC 9162 root hash in standard base64, one per line,
 * then optional extension lines. Signing size and root together is what pins an inclusion or consistency proof to
 * one tree (src/audit/merkle.ts).
 */
export interface Checkpoint {
  origin: string;
  size: number;
  root: Buffer;
  /** Extra lines after the root (none are required; kept in order when parsed). */
  extensions?: string[];
}

export function checkpointText(c: Checkpoint): string {
  if (!/^\S(.*\S)?$/u.test(c.origin) || c.origin.includes('\n')) throw new Error('a checkpoint origin must be one non-blank line');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new Error(`tree size ${c.size} is not a non-negative integer`);
  if (c.root.length !== 32) throw new Error('a root hash is 32 bytes');
  const ext = (c.extensions ?? []).map((l) => {
    if (l.length === 0 || l.includes('\n')) throw new Error('an extension line must be non-empty and single');
    return `${l}\n`;
  });
  return `${c.origin}\n${c.size}\n${c.root.toString('base64')}\n${ext.join('')}`;
}

/** Reads a checkpoint's text (already opened from its signed note); throws NoteFormatError naming the bad line. */
export function parseCheckpoint(text: string): Checkpoint {
  const lines = text.split('\n');
  if (lines.pop() !== '' || lines.length < 3) throw new NoteFormatError('a checkpoint has an origin, a size and a root hash, one per line');
  const [origin, size, root, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin.trim() === '' || origin !== origin.trim()) throw new NoteFormatError('checkpoint line 1: the origin is blank or padded');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size) || !Number.isSafeInteger(Number(size))) throw new NoteFormatError(`checkpoint line 2: "${size.slice(0, 40)}" is not a tree size`);
  const hash = Buffer.from(root, 'base64');
  if (hash.length !== 32 || hash.toString('base64') !== root) throw new NoteFormatError('checkpoint line 3: not a 32-byte hash in standard base64');
  if (extensions.some((l) => l === '')) throw new NoteFormatError('a checkpoint has no blank line');
  return { origin, size: Number(size), root: hash, ...(extensions.length ? { extensions } : {}) };
}

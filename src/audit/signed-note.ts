import { createHash } from 'node:crypto';

/**
 * C2SP signed notes (c2sp.org/signed-note): the envelope of the custody log's checkpoints. A note is UTF-8 text
 * ending in a newline, a blank line, then one line per signature: an em dash (U+2014), a space, the signer's key
 * name, a space, and base64(key ID ‖ signature). The signatures cover the text, final newline included. Several
 * signers may sign one note (the KME's HSM key, its post-quantum key, a peer KME witnessing), and a verifier ignores
 * lines from keys it does not know — which is what lets a post-quantum signature sit beside a classical one.
 *
 * Written here because no maintained npm package implements the format; it is a few dozen lines of parsing.
 */

export interface NoteSigner {
  /** Key name: non-empty, no whitespace, no '+'. */
  name: string;
  keyId: Buffer;
  sign(message: Buffer): Promise<Buffer>;
}

export interface NoteVerifier {
  name: string;
  keyId: Buffer;
  verify(message: Buffer, signature: Buffer): boolean;
}

export interface NoteSignature {
  name: string;
  keyId: Buffer;
  signature: Buffer;
}

/** Signature types of the signed-note spec that this project uses. */
export const SignatureType = {
  ed25519: Buffer.from([0x01]),
  /** ECDSA as transparency-dev/witness signs: DER (ASN.1) signature over SHA-256 of the text; key ID: ecdsaKeyIdOf. */
  ecdsa: Buffer.from([0x02]),
  /** 0xff introduces a type named by a string; used for the post-quantum signature beside the classical one. */
  named: (label: string) => Buffer.concat([Buffer.from([0xff]), Buffer.from(label, 'utf8')]),
};

/** The spec's key ID: the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key). */
export function keyIdOf(name: string, type: Buffer, publicKey: Buffer): Buffer {
  return createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a])).update(type).update(publicKey).digest().subarray(0, 4);
}

/** The spec's exception for type 0x02: the first 4 bytes of SHA-256 of the DER SubjectPublicKeyInfo alone. */
export function ecdsaKeyIdOf(spki: Buffer): Buffer {
  return createHash('sha256').update(spki).digest().subarray(0, 4);
}

const DASH = '\u2014 ';
const NAME = /^[^\s+]+$/u;
const MAX_SIGNATURES = 100;

/** A note or checkpoint that is not well-formed, or does not verify; the message names what is wrong, in one line. */
export class NoteFormatError extends Error {
  override name = 'NoteFormatError';
}

function checkText(text: string): void {
  if (text.trim() === '' || !text.endsWith('\n')) throw new NoteFormatError('a note text must be non-empty and end with a newline');
  if (text.includes('\n\n')) throw new NoteFormatError('a note text must not contain a blank line');
}

/** Signs `text` with every signer, in order; returns the note. */
export async function signNote(text: string, signers: readonly NoteSigner[]): Promise<string> {
  checkText(text);
  if (signers.length === 0) throw new Error('a note needs at least one signer');
  const message = Buffer.from(text, 'utf8');
  const lines = await Promise.all(
    signers.map(async (s) => {
      if (!NAME.test(s.name)) throw new Error(`key name "${s.name}" must be non-empty, without spaces or '+'`);
      const sig = await s.sign(message);
      return `${DASH}${s.name} ${Buffer.concat([s.keyId, sig]).toString('base64')}\n`;
    }),
  );
  return `${text}\n${lines.join('')}`;
}

/** Splits a note into its text and signature lines; throws NoteFormatError, naming what is wrong, on anything else. */
export function parseNote(note: string): { text: string; signatures: NoteSignature[] } {
  const cut = note.lastIndexOf('\n\n');
  if (cut < 0 || !note.endsWith('\n')) throw new NoteFormatError('not a signed note: no blank line before signatures, or no final newline');
  const text = note.slice(0, cut + 1);
  checkText(text);
  const lines = note.slice(cut + 2, -1).split('\n');
  if (lines.length > MAX_SIGNATURES) throw new NoteFormatError(`more than ${MAX_SIGNATURES} signatures`);
  const signatures = lines.map((line, i) => {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/u.exec(line);
    if (!m || !NAME.test(m[1]!)) throw new NoteFormatError(`signature line ${i + 1} is malformed`);
    const raw = Buffer.from(m[2]!, 'base64');
    if (raw.length <= 4) throw new NoteFormatError(`signature line ${i + 1} is too short`);
    return { name: m[1]!, keyId: raw.subarray(0, 4), signature: raw.subarray(4) };
  });
  return { text, signatures };
}

/**
 * Opens a note with the verifiers one trusts: returns its text and the keys whose signatures verified, as
 * `name+keyID` (hex): one name may hold several keys, e.g. a classical and a post-quantum one.
 * A signature by a known key (same name and key ID) that does not verify rejects the whole note; lines of unknown
 * keys are ignored; a note that no known key signed is rejected.
 */
export function openNote(note: string, verifiers: readonly NoteVerifier[]): { text: string; verifiedBy: string[] } {
  const { text, signatures } = parseNote(note);
  const message = Buffer.from(text, 'utf8');
  const verifiedBy: string[] = [];
  for (const s of signatures) {
    const v = verifiers.find((x) => x.name === s.name && x.keyId.equals(s.keyId));
    if (!v) continue;
    if (!v.verify(message, s.signature)) throw new NoteFormatError(`the signature of ${s.name} does not verify`);
    const who = `${s.name}+${s.keyId.toString('hex')}`;
    if (!verifiedBy.includes(who)) verifiedBy.push(who);
  }
  if (verifiedBy.length === 0) throw new NoteFormatError('no signature by a trusted key');
  return { text, verifiedBy };
}

import { textLeafHash, textLeafHex, type Hash } from './merkle.js';

/**
 * What each leaf of the custody tree is. Leaf i (from 0) stands for sequence number i + 1: the event's canonical
 * body (RFC 8785 JSON, exactly as stored), or, for a number whose transaction rolled back and so holds no event, the
 * gap entry below. A body always has an "actor", a gap entry never does, so the two cannot be confused.
 *
 * The sealer computes eventLeafHash in SQL, where the bodies are (src/audit/sealer.ts); test/audit/sealer.test.ts
 * checks every sealed leaf against this function.
 */
export const gapEntry = (seq: number): string => `{"gap":true,"seq":${seq}}`;

export const eventLeafHash = (body: string): Hash => textLeafHash(body);
export const gapLeafHash = (seq: number): Hash => textLeafHash(gapEntry(seq));

/** The same leaf hashes in hex, for the verifier's hot path (see textLeafHex). */
export const eventLeafHex = (body: string): string => textLeafHex(body);
export const gapLeafHex = (seq: number): string => textLeafHex(gapEntry(seq));

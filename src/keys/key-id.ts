import { v7 } from 'uuid';

/**
 * A fresh key_ID: a UUID of version 7 (RFC 9562), whose first 48 bits are the time in milliseconds and whose other
 * 74 are random (the `uuid` package: monotonic within this process). ETSI GS QKD 014 asks only for a UUID.
 *
 * Why not version 4: the key table's primary-key index takes every new key_ID. Random IDs land on random pages of an
 * index of millions of entries, each page written again in full to the WAL after every checkpoint and held in memory
 * for one entry; IDs in time order go to its right edge, a few pages at a time. A key_ID tells whoever sees it when
 * its key was made, to the millisecond: SAEs exchange key_IDs in the clear and ask for keys when they need them, so
 * that time is no secret, and it says nothing of the key.
 */
export const newKeyId = (): string => v7();

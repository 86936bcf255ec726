import type { Logger } from '../log.js';

/**
 * A QKD device (or a simulator) feeding one end of one link. The two devices of a link hold identical material;
 * the KMEs at both ends must store it at identical positions of the link's key stream, so they agree on which
 * material a key_ID means without ever sending it to each other.
 *
 * Who reads what:
 * - the link's **primary** KME reads new material with `take`, assigns it the next positions of the stream, stores
 *   it, and tells the peer KME which device keys (by `ref`) fill which positions;
 * - the **secondary** KME reads exactly that material from its own device with `fetch`, by the refs it was told;
 * - a **loopback** link (no peer: SAEs of one KME) only ever uses `take`.
 * Material is never sent between KMEs: only refs and positions are.
 *
 * The ingester (src/pool/) is the only caller. It calls `release` once the material is durably stored at this end,
 * so a source that keeps its own copy (a file) can erase it; until then it must be able to hand the same material
 * out again (`take` after a failed store returns nothing new: the ingester keeps what it took in memory and retries).
 */
export interface LinkSource {
  /** For the start-up log: what this is, never a secret. */
  readonly description: string;

  /**
   * Primary (and loopback) side: up to `maxBlocks` blocks of new material, as device keys in stream order, without
   * waiting long (a device round trip at most). Each device key holds a whole number of blocks. `[]` when nothing is
   * ready. Throws `DeviceUnavailableError` when the device cannot be reached or is in an outage (the ingester backs
   * off and retries). Material returned is the caller's: the device may not hand it out again.
   */
  take(maxBlocks: number): Promise<DeviceKey[]>;

  /**
   * Secondary side: the material the peer's device handed out under these refs, in the order given, each exactly
   * `blocks` blocks long. Throws `DeviceKeysNotReadyError` when a ref is not (yet) known to this device (the
   * primary announces again later and gives up after a while), `DeviceUnavailableError` when the device cannot be
   * reached. All or nothing. May be called again with the same refs after a failed store: a source that cannot hand
   * out a key twice (an ETSI 014 device) keeps what it fetched until `release`.
   */
  fetch(refs: ReadonlyArray<DeviceRef>): Promise<Buffer[]>;

  /** The material of these refs is stored (at this end): the source may erase its own copy. Idempotent. */
  release(refs: ReadonlyArray<string>): Promise<void>;

  /** What the device reports, for status and metrics. Cheap; no I/O. */
  /**
   * Optional: a replica that takes over this link's ingest from another says where the stored stream ends, so a
   * device whose positions this process counts itself (the in-process simulator) carries on from there instead of
   * offering what the other replica already stored. A real device keeps its own position and needs none.
   */
  catchUp?(nextSeq: string): void;
  figures(): DeviceFigures;

  /** Stops; idempotent. Plaintext held in memory is wiped. */
  close(): Promise<void>;
}

export interface DeviceRef {
  /** The device's identifier for a key: an ETSI 014 key_ID, a file name, a simulator position. */
  ref: string;
  /** How many blocks of the link's block size this device key holds. */
  blocks: number;
}

export interface DeviceKey extends DeviceRef {
  /** Exactly `blocks` × block size of material. Plaintext: hand it to the barrier and nowhere else. */
  material: Buffer;
}

export interface DeviceFigures {
  /** Quantum bit error rate last reported by the device (0..1), when it reports one. */
  qber?: number;
  /** Whether the device answered its last call. */
  up: boolean;
  /** When the device last went down, and for how long it was down (ms), if it ever did. */
  lastOutage?: { at: string; durationMs?: number };
  /** How many times the device went down since this source was opened (the metric qkms_link_outages_total). */
  outages: number;
}

/** The device cannot be reached or is in an outage: transient, retry later. */
export class DeviceUnavailableError extends Error {
  override name = 'DeviceUnavailableError';
}

/** The device does not (yet) know some refs: the primary's announcement came before the material, or it is lost. */
export class DeviceKeysNotReadyError extends Error {
  override name = 'DeviceKeysNotReadyError';
  constructor(
    message: string,
    readonly refs: string[],
  ) {
    super(message);
  }
}

/** What a driver learns about the link it feeds, besides its own config section. */
export interface SourceContext {
  kmeId: string;
  linkId: string;
  /** Size of one block of material in bits (the link's block size; a multiple of 8). */
  blockBits: number;
  /** Which side of the link this KME is (see LinkSource): decides whether `take` or `fetch` will be called. */
  role: 'primary' | 'secondary' | 'loopback';
  /** The next stream position this KME has not stored yet (for drivers whose refs are stream positions). */
  startSeq: () => Promise<string>;
  log: Logger;
}

/**
 * A source that can be taken down on purpose for a fault drill (`kms pool outage`): the in-process simulator only.
 * A real device cannot be cut from the KME; the link's fibre or device is where that happens.
 */
export interface LinkOutageDrill {
  /** Stops producing and serving material for `ms` from now. */
  outage(ms: number): void;
}

export function canDrillOutage(source: LinkSource): source is LinkSource & LinkOutageDrill {
  return typeof (source as Partial<LinkOutageDrill>).outage === 'function';
}

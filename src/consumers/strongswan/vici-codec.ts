/**
 * The VICI wire format of strongSwan's charon (the `vici` plugin), written from its protocol description.
 *
 * A packet on the stream is a 4-byte big-endian length, then that many bytes: one packet-type byte, for the named
 * types a 1-byte name length and the name, then for the types that carry one a message. A message is a flat run of
 * elements that nest: SECTION_START name … SECTION_END, KEY_VALUE name value, LIST_START name LIST_ITEM value …
 * LIST_END. Names are at most 255 bytes, values at most 65535.
 *
 * In memory a message is a plain object: a string or Buffer is a key/value, an array a list, an object a section.
 * Decoded values are UTF-8 strings: charon's answers are text, and the only binary value we send (a PPK) goes the
 * other way as a Buffer so that the key never becomes a JavaScript string.
 */

export const PacketType = {
  CMD_REQUEST: 0,
  CMD_RESPONSE: 1,
  CMD_UNKNOWN: 2,
  EVENT_REGISTER: 3,
  EVENT_UNREGISTER: 4,
  EVENT_CONFIRM: 5,
  EVENT_UNKNOWN: 6,
  EVENT: 7,
} as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];

const Element = { SECTION_START: 1, SECTION_END: 2, KEY_VALUE: 3, LIST_START: 4, LIST_ITEM: 5, LIST_END: 6 } as const;

/** charon's default limit on one packet (plugins.vici … 512 KiB); a longer announced length means a broken stream. */
export const MAX_PACKET = 512 * 1024;

/** A value as callers write it: numbers and booleans become text ("yes"/"no", as swanctl.conf spells them). */
export type ViciScalar = string | Buffer | number | boolean;
export type ViciValue = ViciScalar | ViciScalar[] | ViciMessage;
export interface ViciMessage {
  [key: string]: ViciValue | undefined;
}
/** What the decoder gives back: only strings, string lists and sections. */
export type ViciValueIn = string | string[] | ViciSectionIn;
export interface ViciSectionIn {
  [key: string]: ViciValueIn;
}

export interface Packet {
  type: PacketType;
  /** Command or event name, for CMD_REQUEST, EVENT_REGISTER, EVENT_UNREGISTER and EVENT. */
  name?: string;
  /** For CMD_REQUEST, CMD_RESPONSE and EVENT. */
  message?: ViciSectionIn;
}

const NAMED = new Set<number>([PacketType.CMD_REQUEST, PacketType.EVENT_REGISTER, PacketType.EVENT_UNREGISTER, PacketType.EVENT]);
const WITH_MESSAGE = new Set<number>([PacketType.CMD_REQUEST, PacketType.CMD_RESPONSE, PacketType.EVENT]);

export class ViciProtocolError extends Error {
  override name = 'ViciProtocolError';
}

/** The whole packet, length prefix included. Throws a ViciProtocolError naming the key when a name or value is too long. */
export function encodePacket(type: PacketType, name?: string, message?: ViciMessage): Buffer {
  const parts: Buffer[] = [Buffer.from([type])];
  if (NAMED.has(type)) parts.push(encodeName(name ?? '', 'packet name'));
  if (WITH_MESSAGE.has(type)) encodeSection(message ?? {}, parts, '');
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

function encodeName(name: string, where: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length > 255) throw new ViciProtocolError(`${where}: name longer than 255 bytes`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

function encodeScalar(value: ViciScalar, where: string): Buffer {
  const bytes = Buffer.isBuffer(value)
    ? value
    : Buffer.from(typeof value === 'boolean' ? (value ? 'yes' : 'no') : String(value), 'utf8');
  if (bytes.length > 0xffff) throw new ViciProtocolError(`${where}: value longer than 65535 bytes`);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

function encodeSection(section: ViciMessage, out: Buffer[], path: string): void {
  for (const [key, value] of Object.entries(section)) {
    if (value === undefined) continue;
    const where = path ? `${path}.${key}` : key;
    if (Array.isArray(value)) {
      out.push(Buffer.from([Element.LIST_START]), encodeName(key, where));
      for (const item of value) out.push(Buffer.from([Element.LIST_ITEM]), encodeScalar(item, where));
      out.push(Buffer.from([Element.LIST_END]));
    } else if (typeof value === 'object' && !Buffer.isBuffer(value)) {
      out.push(Buffer.from([Element.SECTION_START]), encodeName(key, where));
      encodeSection(value, out, where);
      out.push(Buffer.from([Element.SECTION_END]));
    } else {
      out.push(Buffer.from([Element.KEY_VALUE]), encodeName(key, where), encodeScalar(value, where));
    }
  }
}

/** Decodes one packet body (without its length prefix). Throws a ViciProtocolError on anything malformed. */
export function decodePacket(body: Buffer): Packet {
  const r = new Reader(body);
  const type = r.byte('packet type');
  if (type > PacketType.EVENT) throw new ViciProtocolError(`unknown packet type ${type}`);
  const packet: Packet = { type: type as PacketType };
  if (NAMED.has(type)) packet.name = r.name('packet name');
  if (WITH_MESSAGE.has(type)) packet.message = decodeMessage(r);
  else if (!r.done()) throw new ViciProtocolError(`packet type ${type} carries ${r.left()} unexpected bytes`);
  return packet;
}

function decodeMessage(r: Reader): ViciSectionIn {
  const root = section();
  const stack: ViciSectionIn[] = [root];
  let list: string[] | undefined;
  while (!r.done()) {
    const element = r.byte('element type');
    const current = stack[stack.length - 1]!;
    if (list && element !== Element.LIST_ITEM && element !== Element.LIST_END) {
      throw new ViciProtocolError(`element ${element} inside a list`);
    }
    switch (element) {
      case Element.SECTION_START: {
        const child = section();
        put(current, r.name('section name'), child);
        stack.push(child);
        break;
      }
      case Element.SECTION_END:
        if (stack.length === 1) throw new ViciProtocolError('SECTION_END without a section');
        stack.pop();
        break;
      case Element.KEY_VALUE: {
        const key = r.name('key');
        put(current, key, r.value(key));
        break;
      }
      case Element.LIST_START:
        list = [];
        put(current, r.name('list name'), list);
        break;
      case Element.LIST_ITEM:
        if (!list) throw new ViciProtocolError('LIST_ITEM outside a list');
        list.push(r.value('list item'));
        break;
      case Element.LIST_END:
        if (!list) throw new ViciProtocolError('LIST_END without a list');
        list = undefined;
        break;
      default:
        throw new ViciProtocolError(`unknown element type ${element}`);
    }
  }
  if (list || stack.length !== 1) throw new ViciProtocolError('message ends inside a section or list');
  return root;
}

function section(): ViciSectionIn {
  return {};
}

// defineProperty so that a key named "__proto__" from the wire is an ordinary key, not a prototype switch
function put(target: ViciSectionIn, key: string, value: ViciValueIn): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  done(): boolean {
    return this.at >= this.buf.length;
  }
  left(): number {
    return this.buf.length - this.at;
  }
  byte(what: string): number {
    this.need(1, what);
    return this.buf[this.at++]!;
  }
  name(what: string): string {
    const len = this.byte(`${what} length`);
    return this.take(len, what).toString('utf8');
  }
  value(what: string): string {
    this.need(2, `${what} value length`);
    const len = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return this.take(len, `${what} value`).toString('utf8');
  }
  private take(len: number, what: string): Buffer {
    this.need(len, what);
    const out = this.buf.subarray(this.at, this.at + len);
    this.at += len;
    return out;
  }
  private need(n: number, what: string): void {
    if (this.at + n > this.buf.length) throw new ViciProtocolError(`message truncated in ${what}`);
  }
}

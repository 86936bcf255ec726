import { constants, statSync } from 'node:fs';
import { open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../config/load.js';
import type { FileSourceConfig } from '../config/schema.js';
import {
  DeviceKeysNotReadyError,
  DeviceUnavailableError,
  type DeviceFigures,
  type DeviceKey,
  type DeviceRef,
  type LinkSource,
  type SourceContext,
} from './link-source.js';

/**
 * Key files that a QKD device drops into a directory: raw binary material, one device key per file, the file name
 * as its ref. Both devices of a link drop the same name with the same content.
 *
 * Naming rule (for device integrators): **lexical order of the names is stream order** — the primary takes files
 * in ascending name order (by UTF-16 code unit, i.e. byte order for ASCII names), so use fixed-width counters or
 * timestamps. A device writes under a temporary name and renames into place: names starting with `.` or ending
 * in `.tmp` / `.part` are never read. Only regular files count (not symlinks, not folders).
 *
 * A file holds floor(size / block size) blocks; a shorter tail is not used. `take` reads the directory when
 * called (the ingester polls it, `poll_ms` is its hint), takes whole files only, in order, and never hands a file
 * out again until it is released. `release` overwrites and unlinks the file at this end.
 */
export async function createFileSource(config: FileSourceConfig, ctx: SourceContext): Promise<LinkSource> {
  let isDirectory = false;
  try {
    isDirectory = statSync(config.directory).isDirectory();
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(`/links/${ctx.linkId}/source/directory: cannot read ${config.directory}: ${why}`);
  }
  if (!isDirectory) throw new ConfigError(`/links/${ctx.linkId}/source/directory: ${config.directory} is not a directory`);
  return new KeyFileDirectory(config.directory, ctx);
}

export class KeyFileDirectory implements LinkSource {
  readonly description: string;
  private readonly blockBytes: number;
  /** Files taken and not released yet: never handed out twice. */
  private readonly handedOut = new Set<string>();
  /** Released files that could not be unlinked: never taken again (they would repeat material in the stream). */
  private readonly stuck = new Set<string>();
  /** What has been logged once per file (tail ignored, no whole block, waiting for room). */
  private readonly noted = new Set<string>();
  private up = true;
  private lastOutage: DeviceFigures['lastOutage'];
  private outages = 0;
  private closed = false;

  constructor(
    private readonly directory: string,
    private readonly ctx: SourceContext,
  ) {
    this.blockBytes = ctx.blockBits / 8;
    this.description = `key files in ${directory} (link ${ctx.linkId}, ${ctx.role}; lexical name order is stream order)`;
  }

  async take(maxBlocks: number): Promise<DeviceKey[]> {
    this.checkOpen();
    if (maxBlocks < 1) return [];
    const names = (await this.list()).filter((n) => !this.handedOut.has(n) && !this.stuck.has(n));
    const out: DeviceKey[] = [];
    try {
      let total = 0;
      for (const name of names) {
        const file = await this.openKeyFile(name);
        if (!file) continue; // gone since the listing, or not a regular file
        try {
          const size = (await file.stat()).size;
          const blocks = Math.floor(size / this.blockBytes);
          if (blocks === 0) {
            this.once(`empty:${name}`, { file: name, bytes: size }, 'key file holds less than one block: skipped');
            continue;
          }
          if (total + blocks > maxBlocks) {
            // Stream order: a file that does not fit waits, and so does everything after it.
            if (out.length === 0) {
              const msg = 'key file is larger than the room for one batch: it waits for room';
              this.once(`room:${name}`, { file: name, blocks, maxBlocks }, msg);
            }
            break;
          }
          const tail = size - blocks * this.blockBytes;
          if (tail > 0) {
            this.once(`tail:${name}`, { file: name, bytesIgnored: tail }, 'key file ends with less than a block: the tail is not used');
          }
          const material = await readExactly(file, blocks * this.blockBytes);
          if (!material) break; // shrank since stat: leave it (and what follows) for the next call
          out.push({ ref: name, blocks, material });
          total += blocks;
        } finally {
          await file.close();
        }
      }
    } catch (err) {
      out.forEach((k) => k.material.fill(0));
      throw err;
    }
    for (const key of out) this.handedOut.add(key.ref);
    return out;
  }

  async fetch(refs: ReadonlyArray<DeviceRef>): Promise<Buffer[]> {
    this.checkOpen();
    for (const r of refs) checkRef(r.ref);
    const got: Buffer[] = [];
    const notReady: string[] = [];
    try {
      for (const r of refs) {
        if (!Number.isSafeInteger(r.blocks) || r.blocks < 1) throw new Error(`key file ${r.ref}: announced with ${r.blocks} blocks`);
        const file = await this.openKeyFile(r.ref);
        const material = file ? await readExactly(file, r.blocks * this.blockBytes).finally(() => file.close()) : undefined;
        if (material) got.push(material);
        else notReady.push(r.ref);
      }
    } catch (err) {
      got.forEach((m) => m.fill(0));
      throw err;
    }
    if (notReady.length > 0) {
      got.forEach((m) => m.fill(0));
      throw new DeviceKeysNotReadyError(`link ${this.ctx.linkId}: ${notReady.length} key file(s) missing or too short`, notReady);
    }
    return got;
  }

  /**
   * Overwrites each file with zeros, then unlinks it. Best effort only: on copy-on-write and log-structured
   * filesystems (btrfs, ZFS, APFS), on SSDs with wear levelling and under snapshots or backups, the write lands
   * in new blocks and the old ones may survive. Put the directory on a RAM-backed filesystem (tmpfs) or an
   * encrypted volume whose key is destroyed with the device for real assurance.
   */
  async release(refs: ReadonlyArray<string>): Promise<void> {
    for (const ref of refs) {
      checkRef(ref);
      this.handedOut.delete(ref);
      const path = join(this.directory, ref);
      try {
        const file = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW);
        try {
          const { size } = await file.stat();
          const zeros = Buffer.alloc(Math.min(size, 1 << 20));
          for (let at = 0; at < size; at += zeros.length) await file.write(zeros, 0, Math.min(zeros.length, size - at), at);
          await file.sync();
        } finally {
          await file.close();
        }
        await unlink(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue; // already gone: release is idempotent
        this.stuck.add(ref);
        const msg = 'could not erase a stored key file: it will not be taken again; remove it by hand';
        this.ctx.log.error({ link: this.ctx.linkId, file: ref, code }, msg);
      }
    }
  }

  figures(): DeviceFigures {
    return { up: this.up, outages: this.outages, ...(this.lastOutage ? { lastOutage: this.lastOutage } : {}) };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Candidate key files, in stream (lexical) order. */
  private async list(): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.directory, { withFileTypes: true });
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? String(err);
      if (this.up) {
        this.up = false;
        this.lastOutage = { at: new Date().toISOString() };
        this.outages++;
        this.ctx.log.warn({ link: this.ctx.linkId, directory: this.directory, code: why }, 'key file directory unreadable');
      }
      throw new DeviceUnavailableError(`link ${this.ctx.linkId}: cannot read key file directory ${this.directory}: ${why}`);
    }
    if (!this.up) {
      this.up = true;
      if (this.lastOutage) this.lastOutage = { ...this.lastOutage, durationMs: Date.now() - Date.parse(this.lastOutage.at) };
      this.ctx.log.info({ link: this.ctx.linkId, directory: this.directory }, 'key file directory readable again');
    }
    const names: string[] = [];
    for (const e of entries) {
      if (!e.isFile() || isTemporary(e.name)) continue;
      if (isPlainName(e.name)) names.push(e.name);
      else this.once(`name:${e.name}`, { file: e.name }, 'key file name is not a plain name the peer may ask for: ignored');
    }
    return names
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Opens a regular file of the directory for reading; undefined when it is missing (or not a regular file). */
  private async openKeyFile(name: string): Promise<FileHandle | undefined> {
    let file: FileHandle;
    try {
      // O_NOFOLLOW: a symlink dropped into the directory must not make us read a file elsewhere.
      file = await open(join(this.directory, name), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP') return undefined;
      throw new DeviceUnavailableError(`link ${this.ctx.linkId}: cannot open key file ${name}: ${code ?? err}`);
    }
    if (!(await file.stat()).isFile()) {
      await file.close();
      return undefined;
    }
    return file;
  }

  private once(what: string, fields: Record<string, unknown>, msg: string): void {
    if (this.noted.has(what)) return;
    this.noted.add(what);
    this.ctx.log.warn({ link: this.ctx.linkId, ...fields }, msg);
  }

  private checkOpen(): void {
    if (this.closed) throw new DeviceUnavailableError(`link ${this.ctx.linkId}: the key file source is closed`);
  }
}

/** Names a device is still writing: never read. */
function isTemporary(name: string): boolean {
  return name.startsWith('.') || name.endsWith('.tmp') || name.endsWith('.part');
}

/** A name both ends may use as a ref: no path separator, no `..`, nothing a device is still writing. */
function isPlainName(name: string): boolean {
  return typeof name === 'string' && name !== '' && !/[/\\\0]/.test(name) && !name.includes('..') && !isTemporary(name);
}

/** Refs come from the peer KME: only a plain key file name, or a peer could make us read outside the directory. */
function checkRef(ref: string): void {
  if (!isPlainName(ref)) throw new Error(`key file ref ${JSON.stringify(String(ref).slice(0, 80))} is not a plain key file name`);
}

/** The first `length` bytes of the file, or undefined when it is shorter. */
async function readExactly(file: FileHandle, length: number): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(length);
  let at = 0;
  while (at < length) {
    const { bytesRead } = await file.read(buf, at, length - at, at);
    if (bytesRead === 0) {
      buf.fill(0);
      return undefined;
    }
    at += bytesRead;
  }
  return buf;
}

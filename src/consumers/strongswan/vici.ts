import { connect, type Socket } from 'node:net';
import {
  decodePacket,
  encodePacket,
  MAX_PACKET,
  PacketType,
  ViciProtocolError,
  type Packet,
  type ViciMessage,
  type ViciSectionIn,
} from './vici-codec.js';

/**
 * A client for charon's VICI interface on its UNIX socket. No maintained npm client exists, so this is ours.
 *
 * Contract:
 * - One connection, used strictly in turn: charon answers requests in order, so `call`/`stream` queue behind each
 *   other; callers may fire them concurrently.
 * - `call` resolves with the response message. A response with `success: "no"` (load-*, initiate, terminate, …)
 *   rejects with a ViciCommandError carrying strongSwan's `errmsg`.
 * - `stream` registers for an event, makes the request, and returns the events that arrived before the response
 *   (list-sas streams one `list-sa` event per IKE SA, list-conns one `list-conn` per connection).
 * - A request that gets no answer within its timeout rejects and closes the connection: a late answer would be
 *   taken for the next request's. Every later call then rejects with the same error.
 * - Messages may carry key bytes (load-shared): they go into the socket and nowhere else, and no error built here
 *   quotes a message.
 */
export class ViciClient {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: ((p: Packet) => void) | undefined;
  private rejectWaiter: ((err: Error) => void) | undefined;
  private onEvent: ((p: Packet) => void) | undefined;
  private failure: Error | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => this.fail(new ViciError(`VICI connection to ${path} failed: ${err.message}`)));
    socket.on('close', () => this.fail(new ViciError(`charon closed the VICI connection on ${path}`)));
  }

  /** Connects to `path`; a missing socket or one nobody listens on rejects with an error that says what to check. */
  static connect(path: string, opts: { timeoutMs?: number } = {}): Promise<ViciClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(new ViciClient(socket, path, opts.timeoutMs ?? 10_000));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => reject(connectError(path, err)));
    });
  }

  /** True once the connection failed or was closed: every call rejects; connect again. */
  get closed(): boolean {
    return this.failure !== undefined;
  }

  /** One command; see the class contract for errors. `timeoutMs` overrides the client's (initiate can take long). */
  call(command: string, message: ViciMessage = {}, timeoutMs = this.timeoutMs): Promise<ViciSectionIn> {
    return this.inTurn(async () => checked(command, await this.request(command, message, timeoutMs)));
  }

  /**
   * A command whose results come as `event` packets before its response (list-sas → list-sa, initiate →
   * control-log). `onEvent` sees each as it arrives, also when the command then fails (initiate's log says why).
   */
  stream(
    command: string,
    message: ViciMessage,
    event: string,
    opts: { timeoutMs?: number; onEvent?: (event: ViciSectionIn) => void } = {},
  ): Promise<{ response: ViciSectionIn; events: ViciSectionIn[] }> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return this.inTurn(async () => {
      const confirm = await this.exchange(encodePacket(PacketType.EVENT_REGISTER, event), timeoutMs, `register ${event}`);
      if (confirm.type !== PacketType.EVENT_CONFIRM) throw new ViciError(`charon does not know the VICI event "${event}"`);
      const events: ViciSectionIn[] = [];
      this.onEvent = (p) => {
        if (p.name !== event) return;
        events.push(p.message ?? {});
        opts.onEvent?.(p.message ?? {});
      };
      try {
        const response = checked(command, await this.request(command, message, timeoutMs));
        return { response, events };
      } finally {
        this.onEvent = undefined;
        if (!this.failure) await this.exchange(encodePacket(PacketType.EVENT_UNREGISTER, event), timeoutMs, `unregister ${event}`);
      }
    });
  }

  async close(): Promise<void> {
    this.failure ??= new ViciError(`VICI connection to ${this.path} is closed`);
    if (this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    });
  }

  private async request(command: string, message: ViciMessage, timeoutMs: number): Promise<ViciSectionIn> {
    const answer = await this.exchange(encodePacket(PacketType.CMD_REQUEST, command, message), timeoutMs, command);
    if (answer.type === PacketType.CMD_UNKNOWN) throw new ViciError(`charon does not know the VICI command "${command}"`);
    if (answer.type !== PacketType.CMD_RESPONSE) throw new ViciProtocolError(`${command}: unexpected packet type ${answer.type}`);
    return answer.message ?? {};
  }

  /** Sends one packet and waits for the next packet that is not an event. */
  private exchange(packet: Buffer, timeoutMs: number, what: string): Promise<Packet> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new ViciError(`charon did not answer ${what} within ${timeoutMs} ms on ${this.path}`));
      }, timeoutMs);
      this.waiter = (p) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.rejectWaiter = undefined;
        resolve(p);
      };
      this.rejectWaiter = (err) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.rejectWaiter = undefined;
        reject(err);
      };
      this.socket.write(packet);
    });
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private receive(chunk: Buffer): void {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    while (this.buffered.length >= 4) {
      const len = this.buffered.readUInt32BE(0);
      if (len > MAX_PACKET) return this.fail(new ViciProtocolError(`packet of ${len} bytes announced, more than ${MAX_PACKET}`));
      if (this.buffered.length < 4 + len) return;
      const body = this.buffered.subarray(4, 4 + len);
      this.buffered = this.buffered.subarray(4 + len);
      let packet: Packet;
      try {
        packet = decodePacket(body);
      } catch (err) {
        return this.fail(err as Error);
      }
      if (packet.type === PacketType.EVENT) this.onEvent?.(packet);
      else if (this.waiter) this.waiter(packet);
      else return this.fail(new ViciProtocolError(`unsolicited packet type ${packet.type}`));
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.rejectWaiter?.(this.failure);
    this.socket.destroy();
  }
}

export class ViciError extends Error {
  override name = 'ViciError';
}

/** charon refused a command; `errmsg` is strongSwan's own words. */
export class ViciCommandError extends ViciError {
  override name = 'ViciCommandError';
  constructor(
    readonly command: string,
    readonly errmsg: string,
  ) {
    super(`strongSwan refused ${command}: ${errmsg || 'no reason given'}`);
  }
}

function checked(command: string, response: ViciSectionIn): ViciSectionIn {
  if (response.success === 'no') {
    const errmsg = response.errmsg;
    throw new ViciCommandError(command, typeof errmsg === 'string' ? errmsg : '');
  }
  return response;
}

function connectError(path: string, err: NodeJS.ErrnoException): ViciError {
  switch (err.code) {
    case 'ENOENT':
      return new ViciError(`VICI socket ${path} does not exist: is charon running with the vici plugin, and does its plugins.vici.socket name this path?`);
    case 'ECONNREFUSED':
      return new ViciError(`nothing listens on VICI socket ${path}: charon is not running (a stale socket file is left)`);
    case 'EACCES':
      return new ViciError(`no permission to open VICI socket ${path}: run the agent as a user charon's socket admits`);
    default:
      return new ViciError(`cannot connect to VICI socket ${path}: ${err.message}`);
  }
}

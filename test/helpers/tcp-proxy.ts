import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 that a test controls, to put between the KME and its database.
 *
 * Modes:
 * - `forward`: bytes flow both ways (a healthy network).
 * - `refuse`: every proxied connection is destroyed and the listening socket is closed, so new connections get
 *   ECONNREFUSED (the database host went away).
 * - `blackhole`: connections are accepted but nothing is forwarded in either direction, on old and new
 *   connections alike (a silent network partition: only timeouts notice).
 * - `dropReplies`: on the connections open at that moment, requests reach the server but its answers are
 *   swallowed (the server acts, the client never hears: the "lost response" case). New connections work normally,
 *   so a client that gives up and dials again gets through.
 *
 * `restore()` goes back to `forward` on the same port; connections that were black-holed are destroyed then
 * (their protocol state is lost), as a healed partition would reset them.
 */
export type ProxyMode = 'forward' | 'refuse' | 'blackhole' | 'dropReplies';

interface Pair {
  client: Socket;
  upstream?: Socket;
  /** Swallow what the server answers on this connection. */
  dropping?: boolean;
}

export class TcpProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<Pair>();
  private modeNow: ProxyMode = 'forward';
  /** Connections accepted since start (including black-holed ones). */
  accepted = 0;

  private constructor(
    private readonly target: { host: string; port: number },
    public port: number,
  ) {}

  /** Listens on 127.0.0.1 (an ephemeral port) and forwards to `target`. */
  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target, 0);
    await proxy.listen();
    return proxy;
  }

  /** `url` (a postgres URL) with its host and port replaced by this proxy's. */
  urlFor(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  get mode(): ProxyMode {
    return this.modeNow;
  }

  get openConnections(): number {
    return this.pairs.size;
  }

  /** Destroys every proxied connection and refuses new ones until `restore()`. */
  async refuse(): Promise<void> {
    this.modeNow = 'refuse';
    for (const p of this.pairs) this.destroyPair(p);
    await this.stopListening();
  }

  /** Stops forwarding on every connection, old and new, without closing any of them. */
  blackhole(): void {
    this.modeNow = 'blackhole';
  }

  /**
   * The next time a client sends bytes containing `pattern` (e.g. a PostgreSQL `COMMIT` on the plain-text wire
   * protocol), that connection forwards them, swallows whatever the server answers, and is cut 200 ms later: the
   * server acted (committed), the client only sees its connection die. Resolves when it happened.
   */
  cutAfter(pattern: string, opts: { onceSeen?: string } = {}): Promise<void> {
    return new Promise((resolve) =>
      this.cutters.push({ pattern: Buffer.from(pattern), onceSeen: opts.onceSeen ? Buffer.from(opts.onceSeen) : undefined, done: resolve }),
    );
  }

  /** `onceSeen`: only on a connection that sent this first (e.g. the statement whose transaction the COMMIT ends). */
  private readonly cutters: Array<{ pattern: Buffer; onceSeen?: Buffer; done: () => void; primed?: Set<Pair> }> = [];

  /** On the connections open now: forwards what clients send, swallows what the server answers. */
  dropReplies(): void {
    this.modeNow = 'dropReplies';
    for (const p of this.pairs) p.dropping = true;
  }

  /** Back to forwarding; black-holed connections are reset, a refused listener listens again on the same port. */
  async restore(): Promise<void> {
    if (this.modeNow === 'blackhole') for (const p of this.pairs) this.destroyPair(p);
    if (this.modeNow === 'dropReplies') for (const p of this.pairs) if (p.dropping) this.destroyPair(p);
    this.modeNow = 'forward';
    if (!this.server) await this.listen();
  }

  async close(): Promise<void> {
    this.modeNow = 'refuse';
    for (const p of this.pairs) this.destroyPair(p);
    await this.stopListening();
  }

  private listen(): Promise<void> {
    const server = createServer((client) => this.accept(client));
    return new Promise((ok, fail) => {
      server.once('error', fail);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', fail);
        this.port = (server.address() as { port: number }).port;
        this.server = server;
        ok();
      });
    });
  }

  private stopListening(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return Promise.resolve();
    return new Promise((ok) => server.close(() => ok()));
  }

  private accept(client: Socket): void {
    this.accepted++;
    if (this.modeNow === 'refuse') {
      client.destroy();
      return;
    }
    const pair: Pair = { client };
    this.pairs.add(pair);
    client.on('error', () => this.destroyPair(pair));
    client.on('close', () => this.destroyPair(pair));
    if (this.modeNow === 'blackhole') {
      client.on('data', () => undefined); // swallowed: never dialled upstream
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    pair.upstream = upstream;
    upstream.on('error', () => this.destroyPair(pair));
    upstream.on('close', () => this.destroyPair(pair));
    client.on('data', (chunk: Buffer) => {
      for (const c of this.cutters) if (c.onceSeen && chunk.includes(c.onceSeen)) (c.primed ??= new Set()).add(pair);
      const cutter = this.cutters.findIndex((c) => chunk.includes(c.pattern) && (!c.onceSeen || c.primed?.has(pair)));
      if (cutter >= 0) {
        const [c] = this.cutters.splice(cutter, 1);
        pair.dropping = true;
        upstream.write(chunk);
        setTimeout(() => {
          this.destroyPair(pair);
          c!.done();
        }, 200);
        return;
      }
      if (this.modeNow === 'forward' || this.modeNow === 'dropReplies') upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if ((this.modeNow === 'forward' || this.modeNow === 'dropReplies') && !pair.dropping) client.write(chunk);
    });
  }

  private destroyPair(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream?.destroy();
  }
}

/** host and port of a postgres URL. */
export function hostPortOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432) };
}

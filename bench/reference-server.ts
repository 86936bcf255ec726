// The reference ceiling: a bare node:https mutual-TLS server answering the three ETSI 014 calls from memory
// (random key bytes, random UUIDs; no database, no HSM, no framework). Measured in the same run as the KME, it shows
// what TLS + HTTP + JSON alone cost on this machine, so the KME's numbers can be read as a ratio to it.
// Runs as a child process; prints `REF_LISTENING <port>` once it accepts connections.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { postQuantumTls } from '../src/tls.js';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const KEY_SIZE = 256;
const callers = new WeakMap<TLSSocket, string>(); // CN per connection, like the KME's per-socket cache

const server = createServer(
  {
    cert: readFileSync(env('REF_CERT')),
    key: readFileSync(env('REF_KEY')),
    ca: readFileSync(env('REF_CA')),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // Same key-exchange groups as the KME, so a fresh handshake costs the same on both.
    ...postQuantumTls,
  },
  (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        handle(req, res, chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {});
      } catch {
        send(res, 400, { message: 'bad request' });
      }
    });
  },
);

function handle(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>): void {
  const socket = req.socket as TLSSocket;
  let caller = callers.get(socket);
  if (!caller) {
    caller = String(socket.getPeerCertificate().subject?.CN ?? '');
    callers.set(socket, caller);
  }
  const url = new URL(req.url ?? '/', 'https://x');
  const m = /^\/api\/v1\/keys\/([^/]+)\/(status|enc_keys|dec_keys)$/.exec(url.pathname);
  if (!m) return send(res, 404, { message: 'not found' });
  const [, other, op] = m;
  if (op === 'status') {
    return send(res, 200, {
      source_KME_ID: 'REF', target_KME_ID: 'REF', master_SAE_ID: caller, slave_SAE_ID: other,
      key_size: KEY_SIZE, stored_key_count: 100_000, max_key_count: 100_000, max_key_per_request: 128,
      max_key_size: 1024, min_key_size: 64, max_SAE_ID_count: 0,
    });
  }
  if (op === 'enc_keys') {
    const number = Number(url.searchParams.get('number') ?? body.number ?? 1);
    const size = Number(url.searchParams.get('size') ?? body.size ?? KEY_SIZE);
    return send(res, 200, { keys: Array.from({ length: number }, () => key(randomUUID(), size)) });
  }
  const ids = url.searchParams.has('key_ID')
    ? [url.searchParams.get('key_ID')!]
    : ((body.key_IDs as Array<{ key_ID: string }> | undefined) ?? []).map((k) => k.key_ID);
  return send(res, 200, { keys: ids.map((id) => key(id, KEY_SIZE)) });
}

const key = (key_ID: string, bits: number) => ({ key_ID, key: randomBytes(bits / 8).toString('base64') });

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`REF_LISTENING ${typeof address === 'object' && address ? address.port : 0}\n`);
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => {
    server.closeAllConnections(); // keep-alive sockets would otherwise hold close() open
    server.close(() => process.exit(0));
  });

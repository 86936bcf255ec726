import t from 'tap';
import { Agent, request } from 'node:https';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { startTestKms, type TestKms } from '../helpers/kms.js';

// Issue 15 item 3: the listener's time limits (config `listen`, src/http/connection-limits.ts), here shortened to
// 1 s. Connections that hold a socket without using it — idle after the handshake, with or without a certificate;
// a handshake never started; headers never finished — are closed; a kept-alive client that keeps asking keeps its
// connection.

let k: TestKms;
let port: number;
let ca: Buffer;
let sae: { cert: Buffer; key: Buffer };
t.before(async () => {
  k = await startTestKms({ fill: false, listen: { handshake_timeout_ms: 1_000, headers_timeout_ms: 1_000, keep_alive_timeout_ms: 5_000 } });
  port = Number(new URL(k.kms.url).port);
  ca = readFileSync(k.pki.ca);
  sae = { cert: readFileSync(k.pki.saes.SAE_A!.cert), key: readFileSync(k.pki.saes.SAE_A!.key) };
});
t.teardown(() => k?.close());

/** Connections the server holds now. */
const serverConnections = () => new Promise<number>((resolve, reject) => k.kms.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

/** Polls until the server holds `n` connections or fewer; the ms that took, or 'never' within `waitMs`. */
async function downTo(n: number, since: number, waitMs: number): Promise<number | 'never'> {
  while (Date.now() - since < waitMs) {
    if ((await serverConnections()) <= n) return Date.now() - since;
    await new Promise((r) => setTimeout(r, 50));
  }
  return 'never';
}

/** Resolves with the ms from `since` to the socket's close, or 'open' if it is still open after `waitMs`. */
function closedWithin(socket: Socket, since: number, waitMs: number): Promise<number | 'open'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('open'), waitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - since);
    });
  });
}

t.test('idle connections after the handshake, without a certificate and not reading, are closed', async (t) => {
  const before = await serverConnections();
  const sockets = await Promise.all(
    Array.from(
      { length: 100 },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, checkServerIdentity: () => undefined });
          s.once('secureConnect', () => resolve(s));
          s.once('error', reject);
        }),
    ),
  );
  const started = Date.now();
  for (const s of sockets) s.on('error', () => undefined);
  t.ok((await serverConnections()) >= before + 100, 'the server holds them');
  await new Promise((r) => setTimeout(r, 500));
  t.ok((await serverConnections()) >= before + 100, 'and still does before the limit');
  // The limit (1 s, checked every 100 ms), the answer, and a second for the client to read it.
  const took = await downTo(before, started, 5_000);
  t.ok(took !== 'never' && took <= 3_500, `all 100 closed by the server (after ${took} ms)`);
  for (const s of sockets) s.destroy();
});

t.test('a TCP connection that never starts its handshake is closed', async (t) => {
  const started = Date.now();
  const s = tcpConnect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  const closed = await closedWithin(s, started, 5_000);
  t.ok(typeof closed === 'number' && closed >= 900 && closed <= 2_000, `closed after ${closed} ms (limit 1 s)`);
});

t.test('headers that never finish: the Error body, then closed', async (t) => {
  const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, cert: sae.cert, key: sae.key });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('secureConnect', r));
  const started = Date.now();
  s.write('GET /api/v1/keys/SAE_B/status HTTP/1.1\r\nHost: localhost\r\n'); // and never the blank line
  let answer = '';
  s.on('data', (d: Buffer) => (answer += d.toString()));
  const closed = await closedWithin(s, started, 5_000);
  t.ok(typeof closed === 'number' && closed <= 3_000, `closed after ${closed} ms`);
  t.match(answer, /^HTTP\/1\.1 400 /, 'a 400 (ETSI 014 has no 408)');
  t.match(answer, /"message":"[^"]+"/, 'with an Error body');
});

t.test('a kept-alive client that keeps asking keeps its one connection', async (t) => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca, cert: sae.cert, key: sae.key });
  const sockets = new Set<unknown>();
  for (let i = 0; i < 5; i++) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`https://localhost:${port}/api/v1/keys/SAE_B/status`, { agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('socket', (s) => sockets.add(s));
      req.on('error', reject);
      req.end();
    });
    t.equal(status, 200, `request ${i + 1}`);
    await new Promise((r) => setTimeout(r, 1_500)); // longer than the header limit between requests, shorter than keep-alive
  }
  t.equal(sockets.size, 1, 'one connection for all five');
  agent.destroy();
});

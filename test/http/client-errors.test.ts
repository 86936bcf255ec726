import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import t, { type Test } from 'tap';
import { startTestKms, type TestKms } from '../helpers/kms.js';
import { answered } from '../helpers/client.js';

// What Node's HTTP parser refuses before Fastify sees it still gets an ETSI Error body. Over real TLS sockets
// with a registered SAE certificate, writing raw bytes, since no HTTP client will send these.

let k: TestKms;
t.before(async () => {
  k = await startTestKms({ keys: { max_key_count: 50 } });
});
t.teardown(() => k.close());

/** Sends `payload` on a fresh mutual-TLS connection as SAE_A and collects everything until the KME closes. */
function exchange(payload: string | Buffer): Promise<{ raw: string; closed: boolean }> {
  const { port } = new URL(k.kms.url);
  const sae = k.pki.saes.SAE_A!;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({
      host: '127.0.0.1', port: Number(port), servername: 'localhost',
      ca: readFileSync(k.pki.ca), cert: readFileSync(sae.cert), key: readFileSync(sae.key),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ raw: Buffer.concat(chunks).toString(), closed: false });
    }, 10_000);
    socket.on('secureConnect', () => socket.write(payload));
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ raw: Buffer.concat(chunks).toString(), closed: true });
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      // A reset after the answer arrived still counts as closed; before it, the test sees an empty answer.
      if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') reject(e);
    });
  });
}

function parse(raw: string) {
  const [head = '', body = ''] = raw.split('\r\n\r\n', 2);
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const headers = Object.fromEntries(headerLines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body, json };
}

async function expectEtsi400(t: Test, payload: string | Buffer, message: RegExp) {
  const { raw, closed } = await exchange(payload);
  const res = parse(raw);
  t.equal(res.status, 400, `status 400 (got: ${raw.slice(0, 80).replace(/\r\n/g, ' | ')})`);
  t.match(res.headers['content-type'], /^application\/json/, 'JSON content type');
  t.equal(Number(res.headers['content-length']), Buffer.byteLength(res.body), 'content-length matches the body');
  t.same(Object.keys((res.json ?? {}) as object), ['message'], `an ETSI Error body: ${res.body}`);
  t.match((res.json as { message?: string } | undefined)?.message, message, 'says what is wrong');
  t.ok(closed, 'the KME closes the connection');
}

t.test('a 100 kB header gets 400 with an ETSI Error body', async (t) => {
  const big = `GET /api/v1/keys/SAE_B/status HTTP/1.1\r\nHost: localhost\r\nX-Filler: ${'a'.repeat(100_000)}\r\n\r\n`;
  await expectEtsi400(t, big, /^request headers are too large$/);
});

t.test('bytes that are not HTTP get 400 with an ETSI Error body, not quoted anywhere', async (t) => {
  const marker = `Zq${randomBytes(4).toString('hex')}`;
  await expectEtsi400(t, `${marker} \u0001\u0002 not http at all\r\n\r\n`, /^malformed HTTP request$/);
  await expectEtsi400(t, Buffer.concat([randomBytes(64), Buffer.from(`\r\n${marker}\r\n\r\n`)]), /^malformed HTTP request$/);
  t.notOk(k.logs().includes(marker), 'the offending bytes are not in the log');
});

t.test('garbage after a good request on a kept-alive connection', async (t) => {
  const good = 'GET /api/v1/keys/SAE_B/status HTTP/1.1\r\nHost: localhost\r\n\r\n';
  const { raw, closed } = await exchange(`${good}GARBAGE \u0000\r\n\r\n`);
  const answers = raw.split(/(?=HTTP\/1\.1 )/);
  t.equal(answers.length, 2, 'two answers');
  t.equal(parse(answers[0] ?? '').status, 200, 'the good request is answered');
  const bad = parse(answers[1] ?? '');
  t.equal(bad.status, 400, 'then a 400');
  t.same(bad.json, { message: 'malformed HTTP request' });
  t.ok(closed, 'and the connection is closed');
});

t.test('the KME still answers normal requests', async (t) => {
  const res = await k.client('SAE_A').get('/api/v1/keys/SAE_B/status');
  t.equal(res.status, 200, answered(res));
});

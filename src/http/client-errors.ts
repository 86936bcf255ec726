import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ConnectionError, FastifyInstance } from 'fastify';

/**
 * Answers for what Node's HTTP parser refuses before Fastify sees a request: bytes that are not HTTP, a header
 * block over the server's size limit, a request that did not arrive in time. Like every other answer of this KME
 * they carry the ETSI Error body `{"message"}` (Fastify's default answers with its own JSON shape).
 *
 * The status is always 400. ETSI GS QKD 014 defines only 400, 401 and 503, and clients map anything else to a
 * generic failure; each of these is a request the client sent wrong (431 and 408 would be more specific HTTP, but
 * no ETSI client is written to read them). The message says which, and never repeats the offending bytes
 * (`err.rawPacket` holds them: it stays out of the log as well).
 *
 * Use as Fastify's `clientErrorHandler` option (it is bound to the Fastify instance).
 */
export function etsiClientErrorHandler(this: FastifyInstance, err: ConnectionError, socket: Socket): void {
  // A reset or already destroyed connection has nobody left to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed || answered.has(socket)) return;
  // A TLS handshake that failed or timed out (Node's HTTPS server passes those here too): no HTTP can be spoken on
  // that connection, and an answer written to it would only wait for a handshake that never comes. Close it now.
  if (/^ERR_(TLS|SSL)_/.test(err.code ?? '')) return void socket.destroy();
  answered.add(socket);
  this.log.debug({ code: err.code }, 'HTTP request refused before routing');
  // Keep draining what the client is still sending (the rest of an oversized header): closing a socket with unread
  // input makes the kernel send a reset, which can destroy the answer before the client reads it. The deadline
  // bounds how long a client that never stops sending, or never reads, holds the socket.
  socket.resume();
  // A client that let its time run out had its chance: it gets a short while to read the answer, not the full one.
  const deadline = setTimeout(() => socket.destroy(), err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? TIMED_OUT_CLOSE_MS : CLOSE_WITHIN_MS).unref();
  socket.once('close', () => clearTimeout(deadline));
  afterInFlight(socket as HttpSocket, () => {
    if (!socket.writable) return void socket.destroy();
    const body = JSON.stringify({ message: messageFor(err.code) });
    socket.end(
      `HTTP/1.1 400 ${STATUS_CODES[400]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

const CLOSE_WITHIN_MS = 10_000;
const TIMED_OUT_CLOSE_MS = 1_000;

/**
 * Good requests pipelined before the bad bytes are still being answered: the 400 goes after their answers, or the
 * client would take it for the answer to one of them (Node's own fallback refuses to write in that case, for the
 * same reason). `_httpMessage` is Node's internal pointer to the response being written on the socket; the next
 * pipelined response is assigned to it when one finishes, so waiting one 'finish' at a time reaches the end.
 */
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };
function afterInFlight(socket: HttpSocket, then: () => void): void {
  const res = socket._httpMessage;
  if (!res || res.writableFinished) return then();
  res.once('finish', () => afterInFlight(socket, then));
}

/** Node may report the same socket again for input that follows the first error; it is answered once. */
const answered = new WeakSet<Socket>();

function messageFor(code: string | undefined): string {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return 'request headers are too large';
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return 'request was not received in time';
    default:
      return 'malformed HTTP request';
  }
}

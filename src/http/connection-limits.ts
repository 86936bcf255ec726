import type { Config } from '../config/schema.js';

/**
 * The HTTPS server's time limits (config `listen`), as options of `https.createServer`. Node's defaults suit a web
 * server, not a key service that a few encryptors call: a TLS handshake may take 120 s, and a connection that
 * completed its handshake and sends nothing waits for Node's 60 s header timeout, checked every 30 s — so a few
 * hundred idle connections, with or without a certificate, would hold sockets and memory for a minute or more.
 *
 * - `handshakeTimeout`: a handshake not done by then is dropped.
 * - `headersTimeout`: counted from the connection (or from the last answer on a kept-alive one) until the request's
 *   headers are complete; past it Node answers 408 (with our Error body: src/http/client-errors.ts) and closes.
 * - `connectionsCheckingInterval`: how often Node checks that limit; a tenth of it, so that a connection outlives it
 *   by at most 10%.
 * The whole-request limit (`request_timeout_ms`) and the idle limit of kept-alive connections
 * (`keep_alive_timeout_ms`) are Fastify's own options (src/app.ts).
 */
export function connectionLimits(listen: Config['listen']): { handshakeTimeout: number; headersTimeout: number; connectionsCheckingInterval: number } {
  return {
    handshakeTimeout: listen.handshake_timeout_ms,
    headersTimeout: listen.headers_timeout_ms,
    connectionsCheckingInterval: Math.max(50, Math.floor(listen.headers_timeout_ms / 10)),
  };
}

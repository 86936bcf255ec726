import { createServer } from 'node:net';

/**
 * Picking TCP ports on 127.0.0.1 for servers this process starts (the demo's KMEs and embedded PostgreSQL, the
 * tests' and the bench's). A port is only free until someone binds it; which picker to use depends on how long the
 * port must stay free before its server binds it.
 */

/** A port the kernel just handed out as free (its ephemeral range): for a server that binds it at once. */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

/**
 * A free port below the kernel's ephemeral range (32768–60999 on Linux by default), where `freePort()` and the local
 * end of every outgoing connection get theirs: for a server that binds it later or again (redis-server, which cannot
 * listen on port 0 and say which it got; a KME restarted on the same port). Never the same port twice per process.
 */
export async function serverPort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    if (handedOut.has(port)) continue; // not bound yet by whoever got it: still free to a check
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
}
const handedOut = new Set<number>();

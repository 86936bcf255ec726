/**
 * KeyWrapper over a PKCS#11 module (SoftHSM2 in tests, a vendor HSM in production), through pkcs11js.
 *
 * KEK versions are AES-256 token objects labelled `${keyLabel}.v${n}`; the highest n present is current.
 *
 * Bounded calls. Every PKCS#11 call runs in a worker thread with a session of its own (src/hsm/pkcs11-lane.ts), as a
 * plain synchronous pkcs11js call, never on the event loop: a hung HSM costs the calls waiting for it a 503 after
 * `timeoutMs` (default 2 s), not the event loop. C_Initialize, opening sessions and the decrypt fault rule run there
 * too, so they are bounded as well. A worker whose call ran past the deadline is abandoned for good; after RETRY_MS
 * a fresh worker with a fresh session takes over. At most MAX_STALLED abandoned workers may be stuck in the module
 * at a time; beyond that the wrapper stays unavailable (and says so) until one comes back.
 *
 * Throughput. A thread switch costs more than SoftHSM's own work, so calls are batched: the calls made in one tick
 * go to the worker as one message (up to BATCH calls; their bytes in shared memory, src/hsm/pkcs11-batch.ts), which
 * runs them back to back and answers once. Callers still call per item, and the bursts of the key service
 * (Barrier.openAll: Promise.all over up to ~512 blocks) become a few messages. Measured with bench/hsm-wrapper.ts on
 * the 2-core dev VM (32-byte calls, medians of 7 alternating rounds; thousands of calls per second, and the main
 * thread's busy time per call):
 *
 *                              this (worker)     timeoutMs 0 (sync)   C_EncryptAsync per call (the design before)
 *   512 under Promise.all      44–46k, 3 µs      49k, 20 µs           21–24k, 40–47 µs
 *   one by one, awaited        13–14k, 25 µs     48–51k, 20 µs        15–17k, 39–43 µs
 *
 * A caller that awaits each call before making the next one pays a round trip per call: two thread wake-ups, which
 * cost more on a VM than the call itself. Such callers (ingest seals block by block) should make their calls
 * concurrently where they can. `timeoutMs: 0` runs the calls synchronously on the main thread instead
 * (src/hsm/pkcs11-sync.ts): 3.5x as fast for one-by-one callers, ~10% faster for bursts but with 6x the cost to the
 * event loop, and unbounded: a module that hangs stops the whole KME. Only for an in-process software module.
 */
import { createHash } from 'node:crypto';
import { HsmUnavailableError, IntegrityError, type KekVersions, type KeyWrapper, type Sealed } from './key-wrapper.js';
import { pkcs11KekVersions } from './pkcs11-kek-versions.js';
import { DECRYPT, ENCRYPT, pending, type Outcome } from './pkcs11-batch.js';
import { IV_BYTES, RETRY_MS, TAG_BYTES } from './pkcs11-engine.js';
import { Lane, type Call } from './pkcs11-lane.js';
import { joinLogin, leaveLogin, logins, type Pkcs11Options } from './pkcs11-module.js';
import { moduleShare } from './pkcs11-share.js';
import { openSynchronousWrapper } from './pkcs11-sync.js';

export type { Pkcs11Options } from './pkcs11-module.js';

const DEFAULT_TIMEOUT_MS = 2000;
const MAX_STALLED = 3;

export async function openPkcs11KeyWrapper(opts: Pkcs11Options): Promise<KeyWrapper & KekVersions> {
  if (opts.timeoutMs === 0) return openSynchronousWrapper(opts);
  const { module, tokenLabel, keyLabel, log } = opts;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const token = `token '${tokenLabel}'`;
  const pinDigest = createHash('sha256').update(opts.pin).digest();
  const loginKey = `${module}\0${tokenLabel}`;
  let [lane, stalled, retryAt, current, closed, model] = [undefined as Lane | undefined, 0, 0, 0, false, ''];
  let versions: number[] = [];
  const queue: Call[] = []; // calls made but not sent yet
  let flushing = false;
  let opened: ((e?: Error) => void) | undefined; // settles the first opening

  function start(mayCreate: boolean): Lane {
    const target = { module, tokenLabel, keyLabel, pin: opts.pin, loggedInPinDigest: logins.get(loginKey)?.pinDigest };
    const data = { target, share: moduleShare(module), mayCreate, testHook: opts.testHook };
    const l: Lane = new Lane(data, timeoutMs, token, {
      ready: (info) => {
        [current, model, versions] = [info.current, info.model, info.versions];
        if (opened) return opened();
        log?.info({ token: tokenLabel, kekVersion: current }, 'PKCS#11 worker ready with a fresh session');
        flush();
      },
      failed: (e) => {
        if (lane === l) lane = undefined;
        if (opened) return opened(e);
        retryAt = Date.now() + RETRY_MS;
        log?.warn({ token: tokenLabel, err: e.message }, 'PKCS#11 session reopen failed');
        fail(new HsmUnavailableError(`cannot reopen a PKCS#11 session on ${token}: ${e.message}`));
      },
      stalled: () => {
        if (lane === l) lane = undefined;
        stalled++;
        retryAt = Date.now() + RETRY_MS;
        fail(new HsmUnavailableError(`PKCS#11 ${token} did not answer within ${timeoutMs} ms`));
      },
      exited: (abandoned) => {
        if (lane === l) lane = undefined;
        if (!abandoned) return;
        stalled--;
        log?.warn({ token: tokenLabel }, 'a stuck PKCS#11 call came back; its worker closed its session and ended');
      },
      current: (v) => (current = v),
      room: () => flush(),
      log: (level, fields, msg) => log?.[level](fields, msg),
    });
    return l;
  }

  /** Why a call cannot be taken now, or undefined; starts a fresh worker when one may be started. */
  function refusal(): HsmUnavailableError | undefined {
    if (closed) return new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
    if (lane) return undefined;
    if (stalled >= MAX_STALLED) {
      const why = `${stalled} calls are stuck in the module; no new session until one returns`;
      return new HsmUnavailableError(`PKCS#11 ${token}: ${why}`);
    }
    if (Date.now() < retryAt) return new HsmUnavailableError(`PKCS#11 ${token} unavailable; reconnect pending`);
    lane = start(false);
    return undefined;
  }

  function enqueue(call: Call): void {
    queue.push(call);
    if (!flushing) {
      flushing = true;
      queueMicrotask(flush); // after the caller's tick: the calls it makes in a row share one message
    }
  }

  function flush(): void {
    flushing = false;
    // A starting worker is flushed when ready; a failed one has failed the queue.
    if (lane?.state === 'ready') lane.pump(queue);
  }

  function fail(e: Error): void {
    for (const c of queue.splice(0)) {
      c.p.input.fill(0);
      c.settle(e);
    }
  }

  type Input = [op: number, version: number, data: Uint8Array, aad: Uint8Array, iv?: Uint8Array];
  const call = <T>([op, version, data, aad, iv]: Input, map: (o: Exclude<Outcome, Error>) => T) =>
    new Promise<T>((resolve, reject) => {
      const refused = refusal();
      if (refused) return reject(refused);
      enqueue({ p: pending(op, version, data, aad, iv), settle: (o) => (o instanceof Error ? reject(o) : resolve(map(o))) });
    });

  lane = start(opts.createIfMissing ?? false);
  try {
    await new Promise<void>((resolve, reject) => (opened = (e) => (e ? reject(e) : resolve())));
  } finally {
    opened = undefined;
  }
  joinLogin(loginKey, pinDigest);
  log?.info({ token: tokenLabel, kekVersion: current, versions }, 'PKCS#11 key wrapper open');

  return {
    ...pkcs11KekVersions(opts),
    description: `PKCS#11 ${token} (${model}) via ${module}, KEK '${keyLabel}'`,
    isHardware: true,
    currentVersion: () => current,
    encrypt: (plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> =>
      call([ENCRYPT, 0, plaintext, aad], (o) => {
        const { version, iv, ciphertext } = o as Exclude<Outcome, Error | Buffer>;
        return { kekVersion: version, iv, ciphertext };
      }),
    async decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
      if (closed) throw new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`);
      if (sealed.iv.length !== IV_BYTES || sealed.ciphertext.length < TAG_BYTES) throw new IntegrityError('malformed sealed value');
      // Versions travel as Int32: one out of that range must not wrap around onto a real one.
      if (!(sealed.kekVersion >= 1 && sealed.kekVersion <= 0x7fffffff && Number.isInteger(sealed.kekVersion))) {
        throw new IntegrityError(`unknown KEK version ${sealed.kekVersion} on ${token}`);
      }
      return call([DECRYPT, sealed.kekVersion, sealed.ciphertext, aad, sealed.iv], (o) => o as Buffer);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      fail(new HsmUnavailableError(`PKCS#11 key wrapper for ${token} is closed`));
      const lastOnToken = leaveLogin(loginKey);
      // Logging out ends the login for every session of this process on the token, so only the last wrapper does.
      await lane?.close(lastOnToken);
      if (stalled > 0) {
        const msg = 'PKCS#11 calls are still stuck in the module; the process cannot exit until they return (stop it with SIGKILL)';
        log?.error({ token: tokenLabel, stuck: stalled }, msg);
      }
    },
  };
}

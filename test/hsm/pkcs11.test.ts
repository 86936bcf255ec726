// The PKCS#11 wrapper against a real SoftHSM2 token made for this run in a temp dir. Where SoftHSM2 is not
// installed the whole file is reported as skipped (never as passed).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pkcs11js from 'pkcs11js';
import type { PKCS11 } from 'pkcs11js';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { HsmUnavailableError, IntegrityError } from '../../src/hsm/key-wrapper.js';
import { openPkcs11KeyWrapper } from '../../src/hsm/pkcs11.js';
import { ModuleHandle } from '../../src/hsm/pkcs11-module.js';
import { finalizeModule, moduleShare } from '../../src/hsm/pkcs11-share.js';
import { createSoftHsmToken } from '../../hsm-mock/softhsm-token.js';
import { keyWrapperConformance, rejectsWith } from '../conformance/key-wrapper.js';
import { eventually } from '../helpers/etsi.js';
import { Pkcs11Double } from './pkcs11-double.js';

const dir = mkdtempSync(join(tmpdir(), 'kms-softhsm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const token = createSoftHsmToken(dir, { label: 'kms-test', pin: 'test-pin-4711' });
// A second token in the same dir, so "token not found" has more than one label to list.
const other = 'skip' in token ? token : createSoftHsmToken(dir, { label: 'kms-other' });

if ('skip' in token || 'skip' in other) {
  const reason = 'skip' in token ? token.skip : 'skip' in other ? other.skip : '';
  t.comment(`SoftHSM2 tests skipped: ${reason}`);
  t.test('PKCS#11 key wrapper on SoftHSM2', { skip: reason }, () => {});
} else {
  const base = { module: token.module, tokenLabel: token.tokenLabel, pin: token.pin };
  const open = (keyLabel = 'kek', createIfMissing = true) => openPkcs11KeyWrapper({ ...base, keyLabel, createIfMissing });

  /**
   * A second pkcs11js handle on the same module, acting behind the wrapper's back. It takes part in the module's
   * share like the wrapper's threads (src/hsm/pkcs11-share.ts): the wrapper's last worker finalizes the module in
   * its own thread, and a handle that did not take part could call the library while it is being finalized (a crash).
   */
  const withRaw = <T>(fn: (p11: PKCS11, slot: Buffer) => T): T => {
    const m = new ModuleHandle(token.module, moduleShare(token.module));
    try {
      return m.call(() => {
        const slot = m.p11.C_GetSlotList(true).find((s) => m.p11.C_GetTokenInfo(s).label.trimEnd() === token.tokenLabel);
        if (!slot) throw new Error('test token vanished');
        return fn(m.p11, slot);
      });
    } finally {
      m.leave();
    }
  };

  // The conformance suites rotate and destroy KEK versions: each runs on a KEK label of its own, so that the tests
  // below still find 'kek.v1'.
  await t.test('conformance', (t) => keyWrapperConformance(t, () => open('kek-conformance')));
  await t.test('conformance with synchronous calls (timeoutMs 0)', (t) =>
    keyWrapperConformance(t, () => openPkcs11KeyWrapper({ ...base, keyLabel: 'kek-conformance-sync', createIfMissing: true, timeoutMs: 0 })));

  /** A wrapper on the real module behind a test double (test/hsm/pkcs11-double.ts), which the test steers. */
  const withDouble = async (t: Test, timeoutMs?: number) => {
    const double = new Pkcs11Double();
    const w = await openPkcs11KeyWrapper({ ...base, keyLabel: 'kek', createIfMissing: true, timeoutMs, testHook: double.hook });
    t.teardown(async () => {
      double.release(); // a held call ends, so that its worker leaves the module and later tests can finalize it
      await w.close();
    });
    return { w, double };
  };
  /** Whether `session` is still open, asked through a handle of our own. */
  const isOpen = (session: Buffer) => withRaw((p11) => {
    try {
      p11.C_GetSessionInfo(session);
      return true;
    } catch (e) {
      if ((e as { code?: number }).code === pkcs11js.CKR_SESSION_HANDLE_INVALID) return false;
      throw e;
    }
  });
  const plaintext = Buffer.from('0123456789abcdef0123456789abcdef');
  const aad = Buffer.from('link-7|block-42');

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  for (const [mode, timeoutMs] of [['worker thread', undefined], ['synchronous calls', 0]] as const) {
    await t.test(`${mode}: CKR_GENERAL_ERROR from a session fault heals on a fresh session: the plaintext, not an IntegrityError`, async (t) => {
      const { w, double } = await withDouble(t, timeoutMs);
      const sealed = await w.encrypt(plaintext, aad);
      double.fault('decrypt', { error: 'CKR_GENERAL_ERROR', times: 1 });
      double.clearCalls();
      const out = await w.decrypt(sealed, aad).catch((e: Error) => e);
      t.ok(Buffer.isBuffer(out) && out.equals(plaintext), `decrypts after the fault (got ${out instanceof Error ? out.name : 'a buffer'})`);
      const calls = double.calls();
      t.equal(calls.length, 2, 'one retry');
      t.not(calls[1]?.session.toString('hex'), calls[0]?.session.toString('hex'), 'the retry ran on another session');
      t.notOk(isOpen(calls[0]!.session), 'the faulty session is closed');
      t.ok((await w.decrypt(sealed, aad)).equals(plaintext), 'and the wrapper keeps working');
    });

    await t.test(`${mode}: a lasting device fault (CKR_GENERAL_ERROR, self-test fails) is HsmUnavailableError, and heals when it ends`, async (t) => {
      const { w, double } = await withDouble(t, timeoutMs);
      const sealed = await w.encrypt(plaintext, aad);
      double.fault('decrypt', { error: 'CKR_GENERAL_ERROR' });
      double.clearCalls();
      await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'a genuine ciphertext during the fault');
      const calls = double.calls();
      t.same(calls.map((c) => c.op), ['decrypt', 'decrypt', 'encrypt', 'decrypt'], 'decrypt, retry, then the self-test');
      t.notOk(isOpen(calls.at(-1)!.session), 'the session that failed its self-test is dropped');
      double.fault('decrypt', undefined);
      t.ok((await w.decrypt(sealed, aad)).equals(plaintext), 'decrypts again once the fault is gone');
    });

    await t.test(`${mode}: a bad tag (SoftHSM's CKR_GENERAL_ERROR) is still an IntegrityError, after a retry and a passing self-test`, async (t) => {
      const { w, double } = await withDouble(t, timeoutMs);
      const sealed = await w.encrypt(plaintext, aad);
      const tag = sealed.ciphertext.length - 1;
      const tampered = { ...sealed, ciphertext: Buffer.from(sealed.ciphertext) };
      tampered.ciphertext[tag] = tampered.ciphertext[tag]! ^ 1;
      double.clearCalls();
      await rejectsWith(t, w.decrypt(tampered, aad), IntegrityError, 'a flipped tag bit on the real module');
      const calls = double.calls();
      t.same(calls.map((c) => c.op), ['decrypt', 'decrypt', 'encrypt', 'decrypt'], 'decrypt, retry, then the self-test');
      t.ok(isOpen(calls.at(-1)!.session), 'the fresh session passed its self-test and is kept');
      t.ok((await w.decrypt(sealed, aad)).equals(plaintext), 'the genuine ciphertext still decrypts');
    });

    await t.test(`${mode}: the specific integrity codes are IntegrityError at once, and the session is kept`, async (t) => {
      const { w, double } = await withDouble(t, timeoutMs);
      const sealed = await w.encrypt(plaintext, aad);
      double.fault('decrypt', { error: 'CKR_ENCRYPTED_DATA_INVALID', times: 1 });
      double.clearCalls();
      await rejectsWith(t, w.decrypt(sealed, aad), IntegrityError, 'CKR_ENCRYPTED_DATA_INVALID');
      t.equal(double.calls().length, 1, 'no retry, no self-test');
      t.ok((await w.decrypt(sealed, aad)).equals(plaintext), 'the next call works');
      const calls = double.calls();
      t.equal(calls[1]?.session.toString('hex'), calls[0]?.session.toString('hex'), 'on the same session');
    });
  }

  await t.test('a device fault in the middle of a batch: every call of the batch gets its own right answer', async (t) => {
    // The worker runs a batch back to back on one session; a fault that replaces the session mid-batch must not
    // shift answers between calls, nor turn the genuine calls after it into failures.
    const { w, double } = await withDouble(t);
    const items = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
      const p = Buffer.from(`plaintext ${i}`);
      const a = Buffer.from(`aad ${i}`);
      return { p, a, sealed: await w.encrypt(p, a) };
    }));
    double.clearCalls();
    double.fault('decrypt', { error: 'CKR_GENERAL_ERROR', times: 1 }); // the first call of the batch meets the fault
    const outs = await Promise.all(items.map(({ sealed, a }) => w.decrypt(sealed, a).catch((e: Error) => e)));
    t.ok(outs.every((o, i) => Buffer.isBuffer(o) && o.equals(items[i]!.p)), 'all 40 decrypt to their own plaintext');
    const sessions = new Set(double.calls().map((c) => c.session.toString('hex')));
    t.equal(sessions.size, 2, 'the batch moved to a fresh session once, at the fault');
  });

  await t.test("bursts larger than the worker's shared memory, and a call larger than one of its slots", async (t) => {
    // Calls travel to the worker in slots of shared memory (src/hsm/pkcs11-batch.ts); a burst that fills every slot
    // waits for answers to free one, and a single call too large for a slot travels in an arena of its own.
    const w = await open();
    t.teardown(() => w.close());
    const items = Array.from({ length: 600 }, (_, i) => ({ p: randomBytes(4096), a: Buffer.from(`big|${i}`) }));
    const sealed = await Promise.all(items.map(({ p, a }) => w.encrypt(p, a)));
    const back = await Promise.all(sealed.map((s, i) => w.decrypt(s, items[i]!.a)));
    t.ok(back.every((b, i) => b.equals(items[i]!.p)), '600 concurrent 4 KiB round trips (~5 MB in flight) each get their own plaintext');
    const huge = randomBytes(300 * 1024);
    const [one, small] = await Promise.all([w.encrypt(huge, aad), w.encrypt(plaintext, aad)]);
    t.ok((await w.decrypt(one, aad)).equals(huge), 'a 300 KiB plaintext round-trips');
    t.ok((await w.decrypt(small, aad)).equals(plaintext), 'and the small call beside it');
  });

  for (const op of ['encrypt', 'decrypt'] as const) {
    await t.test(`${op === 'encrypt' ? 'an' : 'a'} ${op} the HSM does not answer: HsmUnavailableError at the deadline, worker abandoned, a fresh one takes over`, async (t) => {
      const { w, double } = await withDouble(t, 400);
      const sealed = await w.encrypt(plaintext, aad);
      double.fault(op, { held: true, times: 1 }); // blocks the worker thread until the test releases it
      const call = () => (op === 'encrypt' ? w.encrypt(plaintext, aad) : w.decrypt(sealed, aad));
      double.clearCalls();
      const started = Date.now();
      const hungCalls = [call(), call(), call()]; // one batch: the first call hangs, the two behind it wait with it
      for (const [i, p] of hungCalls.entries()) await rejectsWith(t, p, HsmUnavailableError, `the hung ${op}, call ${i + 1} of its batch`);
      const took = Date.now() - started;
      t.ok(took >= 390 && took < 2000, `rejected at the 400 ms deadline (${took} ms)`);
      const hung = double.calls()[0]!.session;

      const fast = Date.now();
      await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'right after: decrypt');
      await rejectsWith(t, w.encrypt(plaintext, aad), HsmUnavailableError, 'and encrypt');
      t.ok(Date.now() - fast < 200, 'both fail fast, without waiting for a deadline');
      t.equal(double.calls().length, 1, 'no call reached the module meanwhile');

      const healed = await eventually(() => w.decrypt(sealed, aad).then((out) => out.equals(plaintext), () => false), 10_000, 100);
      t.ok(healed, 'after the retry delay a fresh worker answers, while the hung call is still stuck');
      t.ok(isOpen(hung), 'the abandoned session is left alone while its call may still run');
      t.notOk(double.calls().slice(1).some((c) => c.session.equals(hung)), 'and is not used by the fresh worker');

      double.release(); // the HSM answers, late
      t.ok(await eventually(async () => !isOpen(hung), 5_000), 'the abandoned worker closes its session when its call comes back');
      t.ok((await w.decrypt(await w.encrypt(plaintext, aad), aad)).equals(plaintext), 'and the wrapper keeps working');
      t.notOk(double.calls().slice(1).some((c) => c.session.equals(hung)), 'the abandoned session was never used again');
    });
  }

  await t.test('an HSM that never answers: fresh workers up to the cap, then HsmUnavailableError at once, and close() does not wait', async (t) => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write(c, _e, done) { lines.push(String(c)); done(); } }));
    const double = new Pkcs11Double();
    const w = await openPkcs11KeyWrapper({ ...base, keyLabel: 'kek', createIfMissing: true, timeoutMs: 300, testHook: double.hook, log });
    t.teardown(() => double.release()); // let the stuck calls end, so that the module is released for later tests
    double.fault('encrypt', { held: true });
    let hangs = 0;
    const deadline = Date.now() + 20_000;
    for (let started = Date.now(); Date.now() < deadline; started = Date.now()) {
      const err = await w.encrypt(plaintext, aad).then(() => undefined, (e: Error) => e);
      if (!(err instanceof HsmUnavailableError)) { t.fail(`expected HsmUnavailableError, got ${String(err)}`); break; }
      if (Date.now() - started >= 290) hangs++;
      else if (/stuck/.test(err.message)) break;
      else await sleep(100); // the retry delay: a fresh worker only after it
    }
    t.equal(hangs, 3, 'three workers got stuck, one after the other');
    const sessions = new Set(double.calls().map((c) => c.session.toString('hex')));
    t.equal(sessions.size, 3, 'each on a session of its own');
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      await rejectsWith(t, w.encrypt(plaintext, aad), HsmUnavailableError, `call ${i + 1} at the cap`);
      t.ok(Date.now() - started < 100, 'answered at once, not at a deadline');
    }
    await sleep(1200);
    await rejectsWith(t, w.encrypt(plaintext, aad), HsmUnavailableError, 'still unavailable after the retry delay: no fourth worker');
    t.equal(new Set(double.calls().map((c) => c.session.toString('hex'))).size, 3, 'no session was opened beyond the cap');
    const started = Date.now();
    await w.close();
    t.ok(Date.now() - started < 300, 'close() does not wait for the stuck calls');
    t.match(lines.join(''), /stuck in the module.*SIGKILL/, 'and says that the process cannot exit before they return');
    double.release();
    const stuck = [...sessions].map((h) => Buffer.from(h, 'hex'));
    t.ok(await eventually(async () => stuck.every((s) => !isOpen(s)), 5_000), 'once they return, the stuck workers close their sessions');
  });

  await t.test("destroying the KEK's session copies behind the wrapper's back: HsmUnavailableError (not IntegrityError), then healed", async (t) => {
    const w = await open();
    t.teardown(() => w.close());
    const sealed = await w.encrypt(plaintext, aad);
    const destroyCopies = () => withRaw((p11, slot) => {
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      try {
        p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: 'kek.v1' }, { type: pkcs11js.CKA_TOKEN, value: false }]);
        const copies = p11.C_FindObjects(session, 10);
        p11.C_FindObjectsFinal(session);
        copies.forEach((h) => p11.C_DestroyObject(session, h));
        return copies.length;
      } finally {
        p11.C_CloseSession(session);
      }
    });
    const destroyed = destroyCopies();
    t.equal(destroyed, 1, "one session copy: the worker's session");
    await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'decrypt with its key copy gone');
    let healed = false;
    for (let i = 0; i < 5 && !healed; i++) healed = await w.decrypt(sealed, aad).then((out) => out.equals(plaintext), () => false);
    t.ok(healed, 'decrypts again within a few calls, on a new session with a new copy');
    destroyCopies();
    await rejectsWith(t, w.encrypt(plaintext, aad), HsmUnavailableError, 'encrypt with its key copy gone');
    healed = false;
    for (let i = 0; i < 5 && !healed; i++) healed = await w.encrypt(plaintext, aad).then(() => true, () => false);
    t.ok(healed, 'encrypts again within a few calls');
  });

  await t.test('describes itself as hardware-backed PKCS#11 and keeps the KEK on the token', async (t) => {
    const w = await open();
    t.teardown(() => w.close());
    t.equal(w.isHardware, true);
    t.match(w.description, /PKCS#11 token 'kms-test'/);
    t.notMatch(w.description, new RegExp(token.pin));
    withRaw((p11, slot) => {
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION); // logged in: the wrapper's login is per process
      try {
        // The wrapper also holds a session copy (CKA_TOKEN false) of the KEK; check both.
        p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: 'kek.v1' }, { type: pkcs11js.CKA_TOKEN, value: true }]);
        const found = p11.C_FindObjects(session, 10);
        p11.C_FindObjectsFinal(session);
        t.equal(found.length, 1, 'exactly one kek.v1 on the token');
        p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: 'kek.v1' }, { type: pkcs11js.CKA_TOKEN, value: false }]);
        const copies = p11.C_FindObjects(session, 10);
        p11.C_FindObjectsFinal(session);
        t.equal(copies.length, 1, 'one session copy, for the open wrapper');
        const copy = p11.C_GetAttributeValue(session, copies[0]!, [{ type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }])
          .map((a) => (a.value as Buffer)[0]);
        t.same(copy, [1, 0], 'the session copy is SENSITIVE and not EXTRACTABLE too');
        const attrs = p11.C_GetAttributeValue(session, found[0]!, [
          { type: pkcs11js.CKA_TOKEN }, { type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_PRIVATE },
        ]).map((a) => (a.value as Buffer)[0]);
        t.same(attrs, [1, 1, 0, 1], 'TOKEN, SENSITIVE, not EXTRACTABLE, PRIVATE');
        t.throws(() => p11.C_GetAttributeValue(session, found[0]!, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/, 'CKA_VALUE cannot be read');
      } finally {
        p11.C_CloseSession(session);
      }
    });
  });

  await t.test('a second wrapper on the same token finds the same KEK', async (t) => {
    const a = await open();
    const aad = Buffer.from('link|0');
    const sealed = await a.encrypt(Buffer.from('shared'), aad);
    const b = await open(); // same module, same process: shares the initialized library
    t.equal((await b.decrypt(sealed, aad)).toString(), 'shared', 'b decrypts what a encrypted');
    await a.close();
    t.equal((await b.decrypt(sealed, aad)).toString(), 'shared', 'closing a does not log b out');
    await b.close();
    const c = await open(); // after the last close finalized the library: initializes it again
    t.equal((await c.decrypt(sealed, aad)).toString(), 'shared', 'a wrapper opened after all closed decrypts too');
    await c.close();
  });

  await t.test('closing a wrapper whose session died leaves the other wrappers working', async (t) => {
    // Session handles and the login are per process: a's close must neither log b out nor touch b's new session.
    const a = await open();
    const b = await open();
    const aad = Buffer.from('reuse');
    const sealed = await b.encrypt(Buffer.from('b'), aad);
    withRaw((p11, slot) => p11.C_CloseAllSessions(slot));
    await b.decrypt(sealed, aad).catch(() => undefined); // b notices and drops its session
    t.equal((await b.decrypt(sealed, aad)).toString(), 'b', 'b has healed');
    await a.close(); // a never noticed: its handle is stale
    t.equal((await b.decrypt(sealed, aad)).toString(), 'b', 'b still works on its first try after a closed');
    await b.close();
  });

  await t.test('picks the highest version as current and still decrypts older ones', async (t) => {
    const v1 = await open('rotating');
    const aad = Buffer.from('x');
    const old = await v1.encrypt(Buffer.from('old'), aad);
    t.equal(old.kekVersion, 1);
    withRaw((p11, slot) => {
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
        { type: pkcs11js.CKA_VALUE_LEN, value: 32 }, { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_ENCRYPT, value: true }, { type: pkcs11js.CKA_DECRYPT, value: true }, { type: pkcs11js.CKA_LABEL, value: 'rotating.v2' },
      ]);
      p11.C_CloseSession(session);
    });
    const v2 = await open('rotating', false);
    t.equal(v2.currentVersion(), 2, 'current version is the highest present');
    t.equal((await v2.encrypt(Buffer.from('new'), aad)).kekVersion, 2, 'new ciphertexts use it');
    t.equal((await v2.decrypt(old, aad)).toString(), 'old', 'v1 ciphertexts still decrypt');
    await v1.close();
    await v2.close();
  });

  await t.test('clear errors', async (t) => {
    await t.rejects(open('absent', false), /no KEK labelled 'absent\.v<n>' on token 'kms-test'/, 'missing key, createIfMissing false');
    const wrongPin = 'wrong-pin-0815';
    const err = await openPkcs11KeyWrapper({ ...base, pin: wrongPin, keyLabel: 'kek' }).then(() => undefined, (e: Error) => e);
    t.match(err?.message, /PIN rejected for token 'kms-test'/, 'wrong PIN');
    t.notMatch(err?.message, new RegExp(wrongPin), 'the error does not repeat the PIN');
    const w = await open(); // the process is now logged in to the token; a wrong PIN must still be refused
    await t.rejects(openPkcs11KeyWrapper({ ...base, pin: wrongPin, keyLabel: 'kek' }), /PIN rejected for token 'kms-test'/, 'wrong PIN while another wrapper is logged in');
    await w.close();
    await t.rejects(openPkcs11KeyWrapper({ ...base, tokenLabel: 'nope', keyLabel: 'kek' }), /token 'nope' not found .*'kms-test'.*'kms-other'|token 'nope' not found .*'kms-other'.*'kms-test'/, 'unknown token lists the labels found');
    await t.rejects(openPkcs11KeyWrapper({ ...base, module: join(dir, 'no-such-module.so'), keyLabel: 'kek' }), /cannot load PKCS#11 module .*no-such-module\.so/, 'missing module');
    const conf = process.env.SOFTHSM2_CONF;
    process.env.SOFTHSM2_CONF = join(dir, 'missing.conf');
    try {
      await t.rejects(open(), /C_Initialize of PKCS#11 module .*libsofthsm2\.so failed with CKR_GENERAL_ERROR.*SOFTHSM2_CONF/, 'missing SOFTHSM2_CONF');
    } finally {
      process.env.SOFTHSM2_CONF = conf;
    }
    const again = await open();
    t.ok(again, 'opens again once the config is back');
    await again.close();
  });

  await t.test('createSoftHsmToken reports softhsm2-util failures without the PINs', (t) => {
    const conf = process.env.SOFTHSM2_CONF;
    const err = (() => {
      try {
        createSoftHsmToken(join(dir, 'bad'), { label: 'bad', pin: 'p1', soPin: 'so-secret-1' }); // PIN too short
      } catch (e) {
        return e as Error;
      }
    })();
    t.match(err?.message, /softhsm2-util --init-token failed/);
    t.notMatch(err?.message, /so-secret-1|--pin/, 'the command line (with PINs) is not in the message');
    t.equal(process.env.SOFTHSM2_CONF, conf, 'SOFTHSM2_CONF is left alone on failure');
    t.end();
  });

  await t.test('the library finalized from outside (finalizeModule) during bursts: no crash, HsmUnavailableError, healed', async (t) => {
    // PKCS#11 leaves C_Finalize undefined while another thread is in a call, and SoftHSM crashes then ("double
    // free"): the worker threads' calls and an outside finalize must take turns (src/hsm/pkcs11-share.ts).
    const w = await open();
    t.teardown(() => w.close());
    const outcomes: unknown[] = [];
    let stop = false;
    const load = (async () => {
      while (!stop) outcomes.push(...(await Promise.allSettled(Array.from({ length: 64 }, () => w.encrypt(plaintext, aad)))));
    })();
    // A finalize lands in the middle of a call only now and then: without the turn-taking, 40 of them crashed the
    // process in two runs of three here.
    for (let i = 0; i < 40; i++) {
      await sleep(10 + Math.random() * 30);
      finalizeModule(token.module);
    }
    stop = true;
    await load;
    const failed = outcomes.filter((o) => (o as PromiseSettledResult<unknown>).status === 'rejected') as PromiseRejectedResult[];
    t.ok(outcomes.length > failed.length, `calls went on between the finalizes (${outcomes.length - failed.length} of ${outcomes.length} succeeded)`);
    t.ok(failed.every((f) => f.reason instanceof HsmUnavailableError), 'the calls that met a finalize failed with HsmUnavailableError');
    let works = false;
    for (let i = 0; i < 5 && !works; i++) works = await w.encrypt(plaintext, aad).then(() => true, () => false);
    t.ok(works, 'and the wrapper heals by itself');
  });

  await t.test('heals itself after losing its session or the library', async (t) => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, new Writable({ write(c, _e, done) { lines.push(String(c)); done(); } }));
    const w = await openPkcs11KeyWrapper({ ...base, keyLabel: 'kek', createIfMissing: true, log });
    t.teardown(() => w.close());
    const aad = Buffer.from('heal');
    const plaintext = Buffer.from('0123456789abcdef0123456789abcdef');
    const sealed = await w.encrypt(plaintext, aad);

    const recovers = async (t: Test, what: string) => {
      const first = await w.encrypt(plaintext, aad).then(() => 'ok', (e: unknown) => e);
      t.ok(first === 'ok' || first instanceof HsmUnavailableError, `${what}: the next call succeeds or is HsmUnavailableError`);
      t.comment(`${what}: the next call ${first === 'ok' ? 'succeeded' : `failed: ${String(first)}`}`);
      let healed = false;
      for (let i = 0; i < 30 && !healed; i++) {
        healed = await w.decrypt(sealed, aad).then((out) => out.equals(plaintext), () => false);
        if (!healed) await new Promise((r) => setTimeout(r, 100));
      }
      t.ok(healed, `${what}: a call soon after succeeds, on the same wrapper`);
      t.equal((await w.decrypt(await w.encrypt(plaintext, aad), aad)).toString(), plaintext.toString(), `${what}: fully working again`);
    };

    withRaw((p11, slot) => p11.C_CloseAllSessions(slot));
    await recovers(t, 'C_CloseAllSessions');
    finalizeModule(token.module); // the library's state ends for the whole process, as a C_Finalize from elsewhere
    await recovers(t, 'C_Finalize');
    // The HSM stays away for a while: reopening fails (and is retried after a pause), then it comes back.
    const conf = process.env.SOFTHSM2_CONF;
    process.env.SOFTHSM2_CONF = join(dir, 'missing.conf');
    finalizeModule(token.module);
    await rejectsWith(t, w.encrypt(plaintext, aad), HsmUnavailableError, 'while the HSM is away: encrypt');
    await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'while the HSM is away: decrypt');
    await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'while the HSM is away: again');
    process.env.SOFTHSM2_CONF = conf;
    await recovers(t, 'HSM back after an outage');
    await rejectsWith(t, w.decrypt({ ...sealed, ciphertext: Buffer.alloc(sealed.ciphertext.length) }, aad), IntegrityError, 'integrity errors are still integrity errors');

    const text = lines.join('');
    t.match(text, /session reopened/, 'the recovery is logged');
    t.notMatch(text, new RegExp(token.pin), 'logs never contain the PIN');
    t.notMatch(text, new RegExp(plaintext.toString()), 'nor the plaintext');
    t.notMatch(text, new RegExp(plaintext.toString('hex')), 'nor its hex');
  });
}

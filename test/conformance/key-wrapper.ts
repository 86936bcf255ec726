// The contract every KeyWrapper implementation must pass (src/hsm/key-wrapper.ts): the PKCS#11 wrapper on
// SoftHSM and hsm-mock run the same checks, so the barrier cannot tell them apart.
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { HsmUnavailableError, IntegrityError, kekVersionsOf, type KeyWrapper, type Sealed } from '../../src/hsm/key-wrapper.js';

type ErrorClass = new (...args: never[]) => Error;

/** Fails unless `p` rejects with an instance of `cls` (not just any error). */
export async function rejectsWith(t: Test, p: Promise<unknown>, cls: ErrorClass, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: resolved, expected ${cls.name}`);
  } catch (e) {
    t.ok(e instanceof cls, `${what}: rejects with ${cls.name}`, { found: e instanceof Error ? `${e.name}: ${e.message}` : e });
  }
}

const flip = (b: Buffer, index: number): Buffer => {
  const copy = Buffer.from(b);
  copy[index] = copy[index]! ^ 0x01;
  return copy;
};

export async function keyWrapperConformance(t: Test, make: () => Promise<KeyWrapper>): Promise<void> {
  // Each subtest gets its own wrapper, so that one that breaks or closes it cannot hide a failure in another.
  const use = async (t: Test): Promise<KeyWrapper> => {
    const w = await make();
    t.teardown(() => w.close());
    return w;
  };

  await t.test('round trip for 0, 1, 32, 128 and 4096 bytes', async (t) => {
    const w = await use(t);
    for (const size of [0, 1, 32, 128, 4096]) {
      const plaintext = randomBytes(size);
      const aad = Buffer.from(`link-a|offset-${size}`);
      const sealed = await w.encrypt(plaintext, aad);
      t.equal(sealed.ciphertext.length, size + 16, `${size} B: ciphertext = plaintext + 16-byte tag`);
      t.equal(sealed.iv.length, 12, `${size} B: 96-bit IV`);
      const out = await w.decrypt(sealed, aad);
      t.ok(Buffer.isBuffer(out), `${size} B: decrypt returns a Buffer`);
      t.ok(out.equals(plaintext), `${size} B: decrypts to the plaintext`);
    }
  });

  await t.test('accepts Uint8Array views and empty aad', async (t) => {
    const w = await use(t);
    const backing = randomBytes(64);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 5, 40);
    const aadView = new Uint8Array(backing.buffer, backing.byteOffset + 50, 10);
    const sealed = await w.encrypt(view, aadView);
    t.ok((await w.decrypt(sealed, Buffer.from(aadView))).equals(Buffer.from(view)), 'a view (with offset) round-trips');
    const noAad = await w.encrypt(Buffer.from('x'), new Uint8Array(0));
    t.equal((await w.decrypt(noAad, Buffer.alloc(0))).toString(), 'x', 'empty aad round-trips');
    await rejectsWith(t, w.decrypt(noAad, Buffer.from([0])), IntegrityError, 'empty aad is not the same as one zero byte');
  });

  await t.test('versions: positive integer, stamped on every ciphertext', async (t) => {
    const w = await use(t);
    const v = w.currentVersion();
    t.ok(Number.isInteger(v) && v > 0, `currentVersion() ${v} is a positive integer`);
    const sealed = await w.encrypt(Buffer.from('k'), Buffer.from('a'));
    t.equal(sealed.kekVersion, v, 'sealed.kekVersion = currentVersion()');
  });

  await t.test('IV is fresh on every call (1000 calls)', async (t) => {
    const w = await use(t);
    const ivs = new Set<string>();
    const plaintext = Buffer.alloc(32, 7);
    const aad = Buffer.from('same aad');
    for (let i = 0; i < 1000; i++) {
      const { iv } = await w.encrypt(plaintext, aad);
      if (iv.length !== 12) t.fail(`call ${i}: IV of ${iv.length} bytes`);
      ivs.add(iv.toString('hex'));
    }
    t.equal(ivs.size, 1000, 'no IV repeats');
  });

  await t.test('ciphertext does not reveal the plaintext', async (t) => {
    const w = await use(t);
    const aad = Buffer.from('aad');
    for (const plaintext of [randomBytes(128), Buffer.alloc(128, 0x41), Buffer.alloc(128, 0)]) {
      const a = await w.encrypt(plaintext, aad);
      const b = await w.encrypt(plaintext, aad);
      t.notOk(a.ciphertext.subarray(0, plaintext.length).equals(plaintext), 'ciphertext differs from plaintext');
      t.notOk(a.ciphertext.includes(plaintext), 'ciphertext does not contain the plaintext');
      t.notOk(a.ciphertext.includes(plaintext.subarray(0, 16)), 'nor its first 16 bytes');
      t.notOk(a.ciphertext.equals(b.ciphertext), 'the same plaintext twice gives different ciphertexts');
    }
  });

  await t.test('authentication failures are IntegrityError and leave the wrapper usable', async (t) => {
    const w = await use(t);
    const aad = Buffer.from('link-a|offset-0|key-1');
    const plaintext = randomBytes(32);
    const sealed = await w.encrypt(plaintext, aad);
    const tampered: Array<[string, Sealed, Buffer]> = [
      ['wrong aad', sealed, Buffer.from('link-a|offset-0|key-2')],
      ['flipped ciphertext bit', { ...sealed, ciphertext: flip(sealed.ciphertext, 0) }, aad],
      ['flipped last ciphertext bit', { ...sealed, ciphertext: flip(sealed.ciphertext, 31) }, aad],
      ['flipped tag bit', { ...sealed, ciphertext: flip(sealed.ciphertext, sealed.ciphertext.length - 1) }, aad],
      ['flipped IV bit', { ...sealed, iv: flip(sealed.iv, 0) }, aad],
      ['truncated tag', { ...sealed, ciphertext: sealed.ciphertext.subarray(0, -1) }, aad],
      ['ciphertext shorter than a tag', { ...sealed, ciphertext: sealed.ciphertext.subarray(0, 15) }, aad],
      ['empty ciphertext', { ...sealed, ciphertext: Buffer.alloc(0) }, aad],
      ['IV of 16 bytes', { ...sealed, iv: Buffer.concat([sealed.iv, Buffer.alloc(4)]) }, aad],
      ['unknown kekVersion (current + 1000)', { ...sealed, kekVersion: sealed.kekVersion + 1000 }, aad],
      ['kekVersion 0', { ...sealed, kekVersion: 0 }, aad],
    ];
    for (const [what, bad, badAad] of tampered) await rejectsWith(t, w.decrypt(bad, badAad), IntegrityError, what);
    t.ok((await w.decrypt(sealed, aad)).equals(plaintext), 'the genuine ciphertext still decrypts afterwards');
  });

  await t.test('200 concurrent encrypt+decrypt calls', async (t) => {
    const w = await use(t);
    const inputs = Array.from({ length: 200 }, (_, i) => ({ plaintext: randomBytes(1 + (i % 64)), aad: Buffer.from(`aad-${i}`) }));
    const results = await Promise.all(
      inputs.map(async ({ plaintext, aad }) => {
        const sealed = await w.encrypt(plaintext, aad);
        return (await w.decrypt(sealed, aad)).equals(plaintext);
      }),
    );
    t.equal(results.filter(Boolean).length, 200, 'all 200 round-trip to their own plaintext');
  });

  await t.test('tampered ciphertexts among concurrent genuine ones: only they fail, and only with IntegrityError', async (t) => {
    // An implementation that has to look twice at an ambiguous failure (src/hsm/pkcs11.ts retries on a fresh
    // session and self-tests the KEK) must not let that disturb the calls around it.
    const w = await use(t);
    const items = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const plaintext = randomBytes(32);
        const aad = Buffer.from(`link-c|${i}`);
        const sealed = await w.encrypt(plaintext, aad);
        const bad = i % 6 === 0;
        return { plaintext, aad, bad, sealed: bad ? { ...sealed, ciphertext: flip(sealed.ciphertext, sealed.ciphertext.length - 1) } : sealed };
      }),
    );
    const outcomes = await Promise.all(items.map(({ sealed, aad }) => w.decrypt(sealed, aad).catch((e: unknown) => e)));
    const wrong = items.filter((item, i) => {
      const out = outcomes[i];
      return item.bad ? !(out instanceof IntegrityError) : !(Buffer.isBuffer(out) && out.equals(item.plaintext));
    });
    t.equal(wrong.length, 0, 'every genuine ciphertext decrypts, every tampered one is IntegrityError', {
      found: outcomes.map((o) => (o instanceof Error ? o.name : 'plaintext')),
    });
  });

  await t.test('a burst mixing encrypts and decrypts, sizes and failures: every call gets its own answer', async (t) => {
    // An implementation that batches concurrent calls (src/hsm/pkcs11.ts sends the calls of one tick to its worker
    // as one message) must keep each answer with its call: no shifted offsets, no failure spilling onto a neighbour.
    const w = await use(t);
    const sizes = [0, 1, 32, 33, 500, 4096];
    const kinds = ['encrypt', 'genuine', 'tampered', 'wrong aad', 'unknown version'] as const;
    const originals = await Promise.all(sizes.map(async (size, i) => {
      const plaintext = randomBytes(size);
      const aad = Buffer.from(`mix|${i}`);
      return { plaintext, aad, sealed: await w.encrypt(plaintext, aad) };
    }));
    const calls = Array.from({ length: 300 }, (_, i) => ({ kind: kinds[i % kinds.length]!, item: originals[(i * 7) % originals.length]! }));
    const outcomes = await Promise.all(calls.map(({ kind, item: { plaintext, aad, sealed } }) => {
      switch (kind) {
        case 'encrypt': return w.encrypt(plaintext, aad).then((s) => w.decrypt(s, aad)).catch((e: unknown) => e);
        case 'genuine': return w.decrypt(sealed, aad).catch((e: unknown) => e);
        case 'tampered': return w.decrypt({ ...sealed, ciphertext: flip(sealed.ciphertext, 0) }, aad).catch((e: unknown) => e);
        case 'wrong aad': return w.decrypt(sealed, Buffer.concat([aad, Buffer.from('x')])).catch((e: unknown) => e);
        case 'unknown version': return w.decrypt({ ...sealed, kekVersion: sealed.kekVersion + 7 }, aad).catch((e: unknown) => e);
      }
    }));
    const wrong = calls.filter(({ kind, item }, i) => {
      const out = outcomes[i];
      return kind === 'encrypt' || kind === 'genuine' ? !(Buffer.isBuffer(out) && out.equals(item.plaintext)) : !(out instanceof IntegrityError);
    });
    t.equal(wrong.length, 0, 'every call got its own right answer', { wrong: wrong.slice(0, 5).map((c) => `${c.kind} of ${c.item.plaintext.length} B`) });
  });

  await t.test('a caller may reuse (or wipe) its buffers as soon as the call is made', async (t) => {
    // Callers wipe key material right after handing it over; an implementation that reads the caller's buffer
    // later (when a batch is sent, on another thread) would encrypt the wiped bytes.
    const w = await use(t);
    const plaintext = randomBytes(32);
    const buf = Buffer.from(plaintext);
    const aad = Buffer.from('reuse|1');
    const sealing = w.encrypt(buf, aad);
    buf.fill(0);
    aad.fill(0);
    const sealed = await sealing;
    const ciphertext = Buffer.from(sealed.ciphertext);
    const opening = w.decrypt(sealed, Buffer.from('reuse|1'));
    sealed.ciphertext.fill(0);
    t.ok((await opening).equals(plaintext), 'what was passed in is what got sealed, and what was sealed opens');
    t.ok((await w.decrypt({ ...sealed, ciphertext }, Buffer.from('reuse|1'))).equals(plaintext), 'and opens again');
  });

  await t.test('close() is idempotent and later calls reject', async (t) => {
    const w = await make();
    const aad = Buffer.from('a');
    const sealed = await w.encrypt(Buffer.from('secret'), aad);
    await w.close();
    await w.close();
    t.pass('closed twice without error');
    await rejectsWith(t, w.encrypt(Buffer.from('x'), aad), HsmUnavailableError, 'encrypt after close');
    await rejectsWith(t, w.decrypt(sealed, aad), HsmUnavailableError, 'decrypt after close');
    t.type(w.description, 'string');
    t.ok(w.description.length > 0, 'description survives close');
  });

  await t.test('KEK versions (the optional capability): a new version seals from the next open, an old one opens until destroyed', async (t) => {
    const first = await use(t);
    const versions = kekVersionsOf(first);
    if (!versions) return t.pass('this implementation has no KEK versions capability');
    const old = first.currentVersion();
    const aad = Buffer.from('rotation');
    const underOld = await first.encrypt(Buffer.from('sealed before the rotation'), aad);
    await rejectsWith(t, versions.createVersion(old), Error, 'a version not above the current one');
    await versions.createVersion(old + 1);
    t.ok((await versions.listVersions()).includes(old + 1), 'the HSM holds the new version');
    const w = versions.needsReopen ? await use(t) : first;
    t.equal(w.currentVersion(), old + 1, 'the new version is current');
    const underNew = await w.encrypt(Buffer.from('sealed after'), aad);
    t.equal(underNew.kekVersion, old + 1, 'and seals');
    t.equal((await w.decrypt(underOld, aad)).toString(), 'sealed before the rotation', 'the old version still opens');
    await rejectsWith(t, versions.destroyVersion(old + 1), Error, 'destroying the current version');
    await versions.destroyVersion(old);
    t.notOk((await versions.listVersions()).includes(old), 'the old version is gone from the HSM');
    const fresh = versions.needsReopen ? await use(t) : w;
    await rejectsWith(t, fresh.decrypt(underOld, aad), IntegrityError, 'what the destroyed version sealed never opens again');
    t.equal((await fresh.decrypt(underNew, aad)).toString(), 'sealed after');
  });
}

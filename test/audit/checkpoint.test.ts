import t from 'tap';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { checkpointText, parseCheckpoint } from '../../src/audit/checkpoint.js';
import { leafHash, rootOf } from '../../src/audit/merkle.js';
import { mlDsa65KeyPair, mlDsa65Signer, mlDsa65Verifier } from '../../src/audit/ml-dsa-note.js';
import { ecdsaKeyIdOf, keyIdOf, NoteFormatError, openNote, parseNote, signNote, SignatureType, type NoteSigner, type NoteVerifier } from '../../src/audit/signed-note.js';

// Checkpoints of the custody log in C2SP signed notes (src/audit/checkpoint.ts, src/audit/signed-note.ts), signed
// and verified with real Ed25519 and ECDSA P-256 keys from node:crypto. (The KME's own keys come from the HSM.)

function ed25519(name: string): { signer: NoteSigner; verifier: NoteVerifier } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const keyId = keyIdOf(name, SignatureType.ed25519, raw);
  return {
    signer: { name, keyId, sign: async (m) => sign(null, m, privateKey) },
    verifier: { name, keyId, verify: (m, s) => verify(null, m, publicKey, s) },
  };
}

function ecdsa(name: string): { signer: NoteSigner; verifier: NoteVerifier } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const keyId = ecdsaKeyIdOf(spki);
  return {
    signer: { name, keyId, sign: async (m) => sign('sha256', m, privateKey) },
    verifier: { name, keyId, verify: (m, s) => verify('sha256', m, publicKey, s) },
  };
}

const root = rootOf(['a', 'b', 'c'].map((x) => leafHash(Buffer.from(x))));
const text = checkpointText({ origin: 'kme.example/KME_A/custody', size: 3, root });

t.test('a checkpoint text is origin, size and root, one per line', async (t) => {
  t.equal(text, `kme.example/KME_A/custody\n3\n${root.toString('base64')}\n`);
  t.same(parseCheckpoint(text), { origin: 'kme.example/KME_A/custody', size: 3, root });
  const ext = checkpointText({ origin: 'o', size: 0, root, extensions: ['cosigned-by KME_B'] });
  t.same(parseCheckpoint(ext).extensions, ['cosigned-by KME_B']);
  for (const [bad, why] of [
    ['o\n03\n' + root.toString('base64') + '\n', /line 2/],
    ['o\n-1\n' + root.toString('base64') + '\n', /line 2/],
    ['o\n3\n' + root.subarray(1).toString('base64') + '\n', /line 3/],
    ['o\n3\n', /origin, a size and a root/],
    [' o\n3\n' + root.toString('base64') + '\n', /line 1/],
  ] as const) {
    t.throws(() => parseCheckpoint(bad), { constructor: NoteFormatError, message: why }, JSON.stringify(bad).slice(0, 40));
  }
});

t.test('signed by the KME and a witness, opened by whoever trusts either', async (t) => {
  const kme = ecdsa('KME_A');
  const pq = ed25519('KME_A'); // a second key under the same name (the post-quantum one, in the KME)
  const witness = ed25519('KME_B');
  const note = await signNote(text, [kme.signer, pq.signer, witness.signer]);
  t.match(note, /^kme\.example\/KME_A\/custody\n3\n[A-Za-z0-9+/=]+\n\n\u2014 KME_A [A-Za-z0-9+/=]+\n\u2014 KME_A \S+\n\u2014 KME_B \S+\n$/u);
  t.equal(parseNote(note).signatures.length, 3);
  const both = openNote(note, [kme.verifier, pq.verifier, witness.verifier]);
  t.equal(both.text, text);
  t.same(both.verifiedBy, [`KME_A+${kme.signer.keyId.toString('hex')}`, `KME_A+${pq.signer.keyId.toString('hex')}`, `KME_B+${witness.signer.keyId.toString('hex')}`]);
  t.same(openNote(note, [witness.verifier]).verifiedBy, [`KME_B+${witness.signer.keyId.toString('hex')}`], 'unknown keys are ignored');
});

t.test('an ML-DSA-65 signature beside the classical one: each verifier checks what it knows', async (t) => {
  const classical = ecdsa('KME_A');
  const pq = mlDsa65KeyPair();
  const note = await signNote(text, [classical.signer, mlDsa65Signer('KME_A', pq)]);
  const pqVerifier = mlDsa65Verifier('KME_A', pq.publicKey);
  t.same(openNote(note, [pqVerifier]).verifiedBy, [`KME_A+${pqVerifier.keyId.toString('hex')}`], 'a post-quantum-only verifier');
  t.equal(openNote(note, [classical.verifier, pqVerifier]).verifiedBy.length, 2, 'both');
  t.throws(() => openNote(note.replace('\n3\n', '\n2\n'), [pqVerifier]), /does not verify/, 'a changed size');
  const other = mlDsa65KeyPair();
  const forged = await signNote(text, [{ ...mlDsa65Signer('KME_A', other), keyId: pqVerifier.keyId }]);
  t.throws(() => openNote(forged, [pqVerifier]), /does not verify/, 'another ML-DSA key claiming the key ID');
  const seed = new Uint8Array(32).fill(7);
  t.same(mlDsa65KeyPair(seed).publicKey, mlDsa65KeyPair(seed).publicKey, 'a seed gives the same key pair');
});

t.test('a changed checkpoint, a forged signature or a stranger key is refused', async (t) => {
  const kme = ecdsa('KME_A');
  const note = await signNote(text, [kme.signer]);
  const changed = note.replace('\n3\n', '\n4\n');
  t.throws(() => openNote(changed, [kme.verifier]), { message: /signature of KME_A does not verify/ }, 'size changed');
  const impostor = ecdsa('KME_A');
  t.throws(() => openNote(note, [impostor.verifier]), { message: /no signature by a trusted key/ }, 'same name, other key');
  const forged = await signNote(text, [{ ...impostor.signer, keyId: kme.signer.keyId }]);
  t.throws(() => openNote(forged, [kme.verifier]), { message: /does not verify/ }, "another key claiming the KME's key ID");
});

t.test('garbage gets a one-line reason', async (t) => {
  for (const [bad, why] of [
    ['', /not a signed note/],
    ['hello\n', /not a signed note/],
    ['hello\n\nnot a signature\n', /line 1 is malformed/],
    ['hello\n\n\u2014 KME_A AAAA\n', /too short/],
    ['\n\n\u2014 KME_A AAAAAAAA\n', /non-empty/],
  ] as const) {
    t.throws(() => parseNote(bad), { constructor: NoteFormatError, message: why }, JSON.stringify(bad));
  }
  await t.rejects(signNote('no newline', [ed25519('K').signer]), NoteFormatError);
  await t.rejects(signNote('a\n\nb\n', [ed25519('K').signer]), NoteFormatError);
  await t.rejects(signNote(text, [ed25519('has space').signer]), /key name/);
});

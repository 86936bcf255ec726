import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { fallbackMessage, openFallbackKeys } from '../../src/peers/fallback-message.js';
import { kemReady, OwnKemKey } from '../../src/peers/pqc-envelope.js';
import type { ExtKeys } from '../../src/schemas/peer.js';

// The post-quantum envelope of fallback keys (src/peers/pqc-envelope.ts, src/peers/fallback-message.ts): the keys
// come out as they went in, only at the KME they were sealed to, and only for the message they were sealed for.

await kemReady();
const receiver = new OwnKemKey();
const keys = [randomBytes(32), randomBytes(32)];
const keyIds = [randomUUID(), randomUUID()];

const message = (to = receiver.public): ExtKeys =>
  fallbackMessage(
    {
      initiator_sae_id: 'SAE_A',
      target_sae_ids: ['SAE_B'],
      keyIds,
      sizeBits: 256,
      qkms_link_id: 'A-B',
      qkms_origin_kme_id: 'KME_A',
      qkms_path: ['KME_A'],
      qkms_expires_at: '2030-01-01T00:00:00.000Z',
    },
    keys,
    to,
  );

t.test('the receiver gets the keys back', async (t) => {
  const m = message();
  t.same(openFallbackKeys(receiver, m).map((b) => b.toString('hex')), keys.map((b) => b.toString('hex')));
  for (const k of keys) {
    t.notMatch(JSON.stringify(m), k.toString('base64'), 'the message does not carry a key in the clear (base64)');
    t.notMatch(JSON.stringify(m), k.toString('hex'), '(hex)');
  }
  t.equal(Buffer.from(m.qkms_pqc!.kem_ciphertext, 'base64').length, 1120, 'an ML-KEM-768+X25519 ciphertext');
  t.not(message().qkms_pqc!.kem_ciphertext, m.qkms_pqc!.kem_ciphertext, 'a fresh encapsulation per message');
});

t.test('another KME cannot open it', async (t) => {
  const other = new OwnKemKey();
  t.throws(() => openFallbackKeys(other, message()), /sealed to KEM key .* not to this KME's current key/);
  // Even claiming the right key id, the other secret does not decapsulate to the same shared secret.
  const m = message();
  m.qkms_pqc!.kem_key_id = other.public.id;
  t.throws(() => openFallbackKeys(other, m), /does not open/);
});

t.test('the envelope is bound to its message', async (t) => {
  const changes: Array<[string, (m: ExtKeys) => void]> = [
    ['another slave', (m) => (m.target_sae_ids = ['SAE_C'])],
    ['another master', (m) => (m.initiator_sae_id = 'SAE_X')],
    ['another key_ID', (m) => (m.keys[0]!.key_id = randomUUID())],
    ['a longer life', (m) => (m.qkms_expires_at = '2099-01-01T00:00:00.000Z')],
    ['another link', (m) => (m.qkms_link_id = 'A-C')],
  ];
  t.equal(openFallbackKeys(receiver, message()).length, 2, 'unchanged, it opens');
  for (const [what, change] of changes) {
    const m = message();
    change(m);
    t.throws(() => openFallbackKeys(receiver, m), /does not open/, what);
  }
  const tampered = message();
  const sealed = Buffer.from(tampered.qkms_pqc!.sealed, 'base64');
  sealed[0]! ^= 1;
  tampered.qkms_pqc!.sealed = sealed.toString('base64');
  t.throws(() => openFallbackKeys(receiver, tampered), /does not open/, 'a flipped bit');
});

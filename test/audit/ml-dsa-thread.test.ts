import t from 'tap';
import { mlDsa65KeyPair, mlDsa65Verifier } from '../../src/audit/ml-dsa-note.js';
import { MlDsaThread } from '../../src/audit/ml-dsa-thread.js';

const keys = mlDsa65KeyPair(new Uint8Array(32).fill(7));
const verifier = mlDsa65Verifier('qkms/KME_T/custody', keys.publicKey);

t.test('signatures made on the thread verify, concurrent ones included', async (t) => {
  const thread = new MlDsaThread(keys.secretKey);
  t.teardown(() => thread.close());
  const messages = [0, 1, 2, 3].map((i) => Buffer.from(`checkpoint ${i}\n`));
  const signatures = await Promise.all(messages.map((m) => thread.sign(m)));
  signatures.forEach((sig, i) => t.ok(verifier.verify(messages[i]!, sig), `signature ${i} verifies`));
  t.notOk(verifier.verify(messages[0]!, signatures[1]!), 'each over its own message');
});

t.test('a thread that died is started again on the next signature; one closed refuses', async (t) => {
  const thread = new MlDsaThread(keys.secretKey);
  await thread.sign(Buffer.from('first\n'));
  // The thread is private: end it the way a crash would, from the outside.
  const worker = (thread as unknown as { worker: { thread: { terminate(): Promise<number> } } }).worker.thread;
  await worker.terminate();
  const message = Buffer.from('after a restart\n');
  t.ok(verifier.verify(message, await thread.sign(message)), 'signed by a fresh thread');
  await thread.close();
  await t.rejects(thread.sign(message), /closed/);
});

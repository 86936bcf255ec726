import t from 'tap';
import { LINE, startTestNetwork } from './helpers/network.js';
t.test('x', async (t) => {
  const net = await startTestNetwork(LINE);
  const enc = await net.client('SAE_A').get('/api/v1/keys/SAE_B/enc_keys');
  console.log(enc.status, enc.text);
  for (const id of ['KME_A', 'KME_B']) console.log(id, net.kme(id).logs().split('\n').filter((l) => /warn|error|fail/i.test(l)).slice(0, 5).join('\n'));
  await net.close();
});

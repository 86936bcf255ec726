// hsm-outage.test.ts again, on a real SoftHSM2 token (a throwaway one, made for this process) instead of hsm-mock: the
// same test body, imported after choosing the HSM. Where SoftHSM2 is not installed this file reports a skip.
import t from 'tap';
import { hsmSkipReason } from '../helpers/kms.js';

process.env.KMS_TEST_HSM = 'softhsm';
const skip = hsmSkipReason('softhsm');
if (skip) {
  t.comment(`SoftHSM2 variant skipped: ${skip}`);
  t.test('hsm-outage on SoftHSM2', { skip }, () => {});
} else {
  await import('./hsm-outage.test.js');
}

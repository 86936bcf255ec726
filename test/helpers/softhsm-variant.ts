import t from 'tap';
import { hsmSkipReason } from './kms.js';

/**
 * Runs a test file again on a real SoftHSM2 token (a throwaway one, made for this process) instead of hsm-mock: sets
 * the HSM every test KME of the process uses, then loads the file (`load` imports it, after the choice). Where SoftHSM2
 * is not installed, reports a skip that says why.
 */
export async function onSoftHsm(what: string, load: () => Promise<unknown>): Promise<void> {
  process.env.KMS_TEST_HSM = 'softhsm';
  const skip = hsmSkipReason('softhsm');
  if (skip) {
    t.comment(`SoftHSM2 variant skipped: ${skip}`);
    t.test(`${what} on SoftHSM2`, { skip }, () => {});
    return;
  }
  await load();
}

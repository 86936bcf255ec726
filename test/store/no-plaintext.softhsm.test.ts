// no-plaintext.test.ts again, on a real SoftHSM2 token (a throwaway one, made for this process) instead of hsm-mock: the
// same test body, imported after choosing the HSM. Where SoftHSM2 is not installed this file reports a skip.
import { onSoftHsm } from '../helpers/softhsm-variant.js';

await onSoftHsm('no-plaintext', () => import('./no-plaintext.test.js'));

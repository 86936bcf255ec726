// custody.test.ts again on a real SoftHSM2 token (a throwaway one, made for this process) instead of hsm-mock: the
// checkpoints are signed by the ECDSA key pair on the token through PKCS#11 and the ML-DSA seed is sealed under the
// token's KEK; the same verification and tamper tests. Where SoftHSM2 is not installed this file reports a skip.
import { onSoftHsm } from '../helpers/softhsm-variant.js';

await onSoftHsm('custody log', () => import('./custody.test.js'));

/**
 * An HSM outage a test switches on and off, whatever HSM it runs on (testHsm(): KMS_TEST_HSM, else hsm-mock), so
 * that one test body serves both. Hand `wrapper` to startTestKms; `set(true)` takes the HSM away, `set(false)` gives
 * it back, and the KME must notice both by itself.
 *
 * - mock: hsm-mock's simulateOutage switch (every call fails with HsmUnavailableError while it is on).
 * - softhsm: a real outage of a real SoftHSM2 token under the real PKCS#11 wrapper. Taking it away: a second
 *   pkcs11js handle on the same module calls C_Finalize, which ends the library's state for the whole process (every
 *   session, the login, the KEK's session copies), and the token directory is moved out of SoftHSM's
 *   directories.tokendir. The wrapper's next call fails (CKR_CRYPTOKI_NOT_INITIALIZED), and its attempts to reopen
 *   fail too, since C_Initialize cannot find its token store (CKR_GENERAL_ERROR). Giving it back moves the
 *   directory back; nothing else: the wrapper re-initializes the module and logs in again on its own.
 *   Moving only this token's own folder (tokens/<uuid>) would not do: C_Initialize then succeeds without the
 *   token, and SoftHSM 2.6 does not rescan its token store until the next C_Initialize, so the token would stay
 *   "not found" after it came back (checked here: no recovery without a second C_Finalize from outside).
 */
import { existsSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { KeyWrapper } from '../../src/hsm/key-wrapper.js';
import { openPkcs11KeyWrapper } from '../../src/hsm/pkcs11.js';
import { finalizeModule } from '../../src/hsm/pkcs11-share.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { freshKekLabel, testHsm, testSoftHsm, type TestHsm } from './kms.js';

export interface HsmOutage {
  /** The wrapper the KME must use (open already, HSM up), for startTestKms({ wrapper }). */
  readonly wrapper: KeyWrapper;
  /** How the outage is made, for the test's comment lines. */
  readonly how: string;
  /** true: the HSM goes away (calls in flight may fail too); false: it is back. Idempotent. */
  set(down: boolean): void;
}

export async function createHsmOutage(hsm: TestHsm = testHsm()): Promise<HsmOutage> {
  return hsm === 'softhsm' ? softHsmOutage() : mockOutage();
}

function mockOutage(): HsmOutage {
  const mock = createMockKeyWrapper();
  return { wrapper: mock, how: "hsm-mock's simulateOutage switch", set: (down) => mock.simulateOutage(down) };
}

async function softHsmOutage(): Promise<HsmOutage> {
  const made = testSoftHsm();
  if ('skip' in made) throw new Error(`SoftHSM2 outage asked for but SoftHSM2 is unavailable: ${made.skip}`);
  const token = made;
  // Opened here rather than by startTestKms, so that the outage can begin before the KME's first call.
  const wrapper = await openPkcs11KeyWrapper({
    module: token.module,
    tokenLabel: token.tokenLabel,
    pin: token.pin,
    keyLabel: freshKekLabel(),
    createIfMissing: true,
  });
  const tokens = join(dirname(token.conf), 'tokens'); // directories.tokendir, as createSoftHsmToken writes it
  const away = `${tokens}.away`;
  let down = false;

  /**
   * C_Finalize through a handle of our own: the library is process-global, so this ends the wrapper's state too.
   * Through the wrapper's coordination (finalizeModule): SoftHSM crashes when C_Finalize runs while another thread
   * is inside a call, and the wrapper's calls run on a worker thread.
   */
  const finalize = () => finalizeModule(token.module);

  return {
    wrapper,
    how: 'SoftHSM2: C_Finalize from a second PKCS#11 handle, token store moved out of directories.tokendir',
    set(value) {
      if (value === down) return;
      if (value) {
        finalize();
        renameSync(tokens, away);
      } else if (existsSync(away)) {
        renameSync(away, tokens);
      }
      down = value;
    },
  };
}

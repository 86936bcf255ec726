import type { HsmConfig } from '../config/schema.js';
import { readSecret } from '../config/load.js';
import type { Logger } from '../log.js';
import type { KeyWrapper } from './key-wrapper.js';
import { openPkcs11KeyWrapper } from './pkcs11.js';
import { openPkcs11SigningKey } from './pkcs11-signing-key.js';
import type { SigningKey } from './signing-key.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';
import { createMockSigningKey } from '../../hsm-mock/mock-signing-key.js';

/** KeyWrapper implementations by config `type` (DESIGN §3.4). */
export async function openKeyWrapper(config: HsmConfig, log: Logger): Promise<KeyWrapper> {
  switch (config.type) {
    case 'mock':
      return createMockKeyWrapper({ log });
    case 'pkcs11':
      return openPkcs11KeyWrapper({ ...onToken(config, log), keyLabel: config.key_label ?? 'kms-kek', timeoutMs: config.timeout_ms });
  }
}

/** The key that signs the custody log's checkpoints, from the same HSM as the KEK. */
export async function openSigningKey(config: HsmConfig, log: Logger): Promise<SigningKey> {
  switch (config.type) {
    case 'mock':
      return createMockSigningKey();
    case 'pkcs11':
      // timeout_ms 0 (synchronous KEK calls) does not apply: signing always runs on a thread of its own.
      return openPkcs11SigningKey({ ...onToken(config, log), label: config.signing_key_label ?? 'kms-custody', timeoutMs: config.timeout_ms || undefined });
  }
}

/** What every key of the token is opened with. */
const onToken = (config: Extract<HsmConfig, { type: 'pkcs11' }>, log: Logger) => ({
  module: config.module,
  tokenLabel: config.token_label,
  pin: readSecret('the HSM PIN', config.pin_env ?? 'KMS_HSM_PIN', config.pin_file),
  createIfMissing: config.create_key_if_missing ?? false,
  log,
});

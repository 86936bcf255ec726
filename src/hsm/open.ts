import type { HsmConfig } from '../config/schema.js';
import { readSecret } from '../config/load.js';
import type { Logger } from '../log.js';
import type { KeyWrapper } from './key-wrapper.js';
import { openPkcs11KeyWrapper } from './pkcs11.js';
import { createMockKeyWrapper } from '../../hsm-mock/mock-key-wrapper.js';

/** KeyWrapper implementations by config `type` (DESIGN §3.4). */
export async function openKeyWrapper(config: HsmConfig, log: Logger): Promise<KeyWrapper> {
  switch (config.type) {
    case 'mock':
      return createMockKeyWrapper({ log });
    case 'pkcs11':
      return openPkcs11KeyWrapper({
        module: config.module,
        tokenLabel: config.token_label,
        keyLabel: config.key_label ?? 'kms-kek',
        pin: readSecret('the HSM PIN', config.pin_env ?? 'KMS_HSM_PIN', config.pin_file),
        createIfMissing: config.create_key_if_missing ?? false,
        timeoutMs: config.timeout_ms,
        log,
      });
  }
}

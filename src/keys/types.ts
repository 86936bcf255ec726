import type { KeyOrigin } from './key-origin.js';

/** ETSI GS QKD 014 data shapes as the key service produces and consumes them (framework-free). */

/** Status (Table 9). All sizes in bits. */
export interface EtsiStatus {
  source_KME_ID: string;
  target_KME_ID: string;
  master_SAE_ID: string;
  slave_SAE_ID: string;
  key_size: number;
  stored_key_count: number;
  max_key_count: number;
  max_key_per_request: number;
  max_key_size: number;
  min_key_size: number;
  max_SAE_ID_count: number;
  status_extension?: Record<string, unknown>;
}

/** Key request (Table 10). Every field optional. Unknown fields are tolerated and ignored. */
export interface KeyRequest {
  number?: number;
  size?: number;
  additional_slave_SAE_IDs?: string[];
  extension_mandatory?: object[];
  extension_optional?: object[];
}

/**
 * Key container (Table 11). `key` is standard, padded base64 (RFC 4648 §4) of exactly `size` bits. Where the keys'
 * material came from is in `key_container_extension.qkms_key_origin` (src/keys/key-origin.ts).
 */
export interface KeyContainer {
  keys: Array<{ key_ID: string; key: string; key_extension?: { qkms_key_origin: KeyOrigin } }>;
  key_container_extension?: { qkms_key_origin: KeyOrigin | 'mixed' };
}

/** The authenticated caller of a key operation. */
export interface SaeCaller {
  saeId: string;
  certSha256: string;
}

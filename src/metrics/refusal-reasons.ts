import { EtsiMessage, type KmsError } from '../errors.js';

/**
 * Why a request was refused (4xx) or failed (503), as one word of a fixed list: the `reason` label of
 * `qkms_refusals_total`. Error messages themselves cannot be labels: they carry SAE IDs, sizes, request ids and,
 * for integrity failures, key_IDs, so each would open a new time series. The message is matched against the
 * catalogue's wordings here (src/errors.ts and the throw sites); a message no rule knows falls into the status's
 * catch-all (`invalid_request`, `unauthorized`, `unavailable`), so the set stays bounded whatever a new message says.
 */
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Every reason the label can take, for documentation and for tests. */
export const REFUSAL_REASONS = [
  'keys_not_found',
  'keys_suspended',
  'sae_not_registered',
  'sae_not_active',
  'size_not_multiple_of_8',
  'extension_unsupported',
  'invalid_request',
  'no_certificate',
  'certificate_rejected',
  'unknown_principal',
  'principal_not_active',
  'not_a_slave',
  'peer_not_allowed',
  'unauthorized',
  'no_such_endpoint',
  'method_not_allowed',
  'conflict',
  'no_key_material',
  'rate_limited',
  'queue_full',
  'timed_out',
  'peer_unconfirmed',
  'pool_held',
  'no_route',
  'hsm_unavailable',
  'key_store_unavailable',
  'integrity',
  'internal',
  'unavailable',
] as const;

/** First match wins; each rule is for one status. */
const RULES: Array<[status: number, pattern: RegExp | string, reason: RefusalReason]> = [
  [400, EtsiMessage.keysNotFound, 'keys_not_found'],
  [400, /keys specified are suspended/, 'keys_suspended'],
  [400, /is not registered at this KME/, 'sae_not_registered'],
  [400, /SAE \S+ is \w+ by an operator/, 'sae_not_active'],
  [400, EtsiMessage.sizeNotMultipleOf8, 'size_not_multiple_of_8'],
  [400, /extension_mandatory/, 'extension_unsupported'],
  [401, /^no client certificate/, 'no_certificate'],
  [401, /^client certificate (rejected|has no subject)/, 'certificate_rejected'],
  [401, /is not registered as an SAE|is not a peer KME of|is not an auditor of|is not an operator of|is not the certificate pinned|is not a KME certificate|is a KME certificate, not/, 'unknown_principal'],
  [401, /^(SAE|peer KME|auditor|operator) \S+ is \w+ by an operator/, 'principal_not_active'],
  [401, /was not named as a slave/, 'not_a_slave'],
  [401, /may not share keys with/, 'peer_not_allowed'],
  [503, /not enough key material|^no QKD material/, 'no_key_material'],
  [503, /keys a minute at this KME/, 'rate_limited'],
  [503, /too many key requests waiting/, 'queue_full'],
  [503, /timed out/, 'timed_out'],
  [503, /could not confirm the keys|refused the keys|fallback could not reach/, 'peer_unconfirmed'],
  [503, /^the key pool of link .* by an operator/, 'pool_held'],
  [503, /^no route|^no QKD link|is misconfigured/, 'no_route'],
  [503, /^HSM unavailable/, 'hsm_unavailable'],
  [503, /^key store unavailable/, 'key_store_unavailable'],
  [503, /integrity check|key-encryption key/, 'integrity'],
  [503, /^internal error/, 'internal'],
];

const FALLBACK: Record<number, RefusalReason> = { 400: 'invalid_request', 401: 'unauthorized', 404: 'no_such_endpoint', 405: 'method_not_allowed', 409: 'conflict' };

export function refusalReason(error: Pick<KmsError, 'statusCode' | 'message'>): RefusalReason {
  for (const [status, pattern, reason] of RULES) {
    if (status !== error.statusCode) continue;
    if (typeof pattern === 'string' ? error.message === pattern : pattern.test(error.message)) return reason;
  }
  return FALLBACK[error.statusCode] ?? 'unavailable';
}

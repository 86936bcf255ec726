import t from 'tap';
import { EtsiMessage, KmsError } from '../../src/errors.js';
import { refusalReason, REFUSAL_REASONS } from '../../src/metrics/refusal-reasons.js';

// The `reason` label of qkms_refusals_total: messages of the error catalogue and the throw sites map to a fixed list
// (a message carries IDs, sizes and sometimes key_IDs: never a label itself); an unknown one to its status's catch-all.

const cases: Array<[number, string, string]> = [
  [400, EtsiMessage.keysNotFound, 'keys_not_found'],
  [400, 'one or more keys specified are suspended by an operator of this KME', 'keys_suspended'],
  [400, 'slave SAE SAE_Q is not registered at this KME or in its network', 'sae_not_registered'],
  [400, 'slave SAE SAE_B is suspended by an operator: it gets no keys', 'sae_not_active'],
  [400, EtsiMessage.sizeNotMultipleOf8, 'size_not_multiple_of_8'],
  [400, EtsiMessage.extensionMandatoryUnsupported, 'extension_unsupported'],
  [400, 'number must be between 1 and 128 (max_key_per_request)', 'invalid_request'],
  [401, 'no client certificate presented: mutual TLS with an SAE certificate is required', 'no_certificate'],
  [401, 'client certificate rejected: it has been revoked (CRL)', 'certificate_rejected'],
  [401, 'CN=SAE_X is not registered as an SAE of this KME', 'unknown_principal'],
  [401, 'SAE SAE_B is revoked by an operator', 'principal_not_active'],
  [401, 'SAE SAE_C was not named as a slave for one or more of the keys requested', 'not_a_slave'],
  [401, 'SAE SAE_A may not share keys with SAE_C: it is not among SAE_A\'s allowed peers', 'peer_not_allowed'],
  [401, 'not a TLS connection', 'unauthorized'],
  [404, 'no such endpoint: GET /nothing', 'no_such_endpoint'],
  [405, 'method PUT is not allowed on /api/v1/keys/SAE_B/status: use GET', 'method_not_allowed'],
  [409, 'SAE SAE_B is revoked already', 'conflict'],
  [503, 'not enough key material for SAE_A → SAE_B: requested 3 key(s) of 256 bits, try again later or ask for fewer keys', 'no_key_material'],
  [503, 'the policy of SAE_A and SAE_B allows 60 keys a minute at this KME; 60 were taken in the last minute: try again in 3 s', 'rate_limited'],
  [503, 'too many key requests waiting on link L; try again later', 'queue_full'],
  [503, 'key request timed out waiting for the key store; nothing was taken, try again', 'timed_out'],
  [503, 'the KMEs of the slaves could not confirm the keys in time (timeout); nothing was delivered, try again', 'peer_unconfirmed'],
  [503, 'the key pool of link L is suspended by an operator of this KME: no keys are made from it', 'pool_held'],
  [503, 'no route from KME_A to KME_Z (SAE SAE_Z)', 'no_route'],
  [503, 'HSM unavailable, try again later', 'hsm_unavailable'],
  [503, 'key store unavailable, try again later', 'key_store_unavailable'],
  [503, 'stored material of key(s) 3f1c… failed its integrity check: destroyed as compromised; the operator must investigate', 'integrity'],
  [503, 'internal error (request req-1); try again later', 'internal'],
  [503, 'something nobody foresaw', 'unavailable'],
];

t.test('catalogue messages map to their reasons', async (t) => {
  for (const [status, message, reason] of cases) t.equal(refusalReason(new KmsError(status as 400, message)), reason, `${status} ${message}`);
});

t.test('every reason of the list is reachable, and only those come out', async (t) => {
  const seen = new Set(cases.map((c) => c[2]));
  t.same([...REFUSAL_REASONS].filter((r) => !seen.has(r)), [], 'each reason has a case above');
  t.ok(cases.every(([status, message]) => REFUSAL_REASONS.includes(refusalReason({ statusCode: status as 400, message }))));
});

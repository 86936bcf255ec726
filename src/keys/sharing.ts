import type { Principals } from '../auth/principals.js';
import { badRequest, unauthorized } from '../errors.js';

/**
 * Whether the registry lets `master` share keys with `slave`, for a slave of this KME (or one whose entry this KME
 * holds): a slave an operator suspended or revoked gets no keys (400: the request names an SAE that cannot take
 * part), and each side's allowed peers, where set, must name the other (401: the pair is not authorized). Throws the
 * KmsError; returns when sharing is allowed. Checked at the master's KME for its own SAEs, and at a slave's KME when
 * a peer reserves keys for it (a KME answers for its own SAEs).
 */
export function checkSharing(principals: Principals | undefined, master: string, slave: string): void {
  if (!principals) return;
  const [m, s] = [principals.get('sae', master), principals.get('sae', slave)];
  if (s && s.status !== 'active') throw badRequest(`slave SAE ${slave} is ${s.status} by an operator: it gets no keys`);
  if (m?.allowedPeers && !m.allowedPeers.includes(slave)) throw unauthorized(`SAE ${master} may not share keys with ${slave}: it is not among ${master}'s allowed peers`);
  if (s?.allowedPeers && !s.allowedPeers.includes(master)) throw unauthorized(`SAE ${slave} may not share keys with ${master}: it is not among ${slave}'s allowed peers`);
}

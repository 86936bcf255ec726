import type { Config } from '../config/schema.js';
import { normalizeFingerprint, type Principal } from './principals.js';

/**
 * The principals a config file lists: its SAEs, peer KMEs, auditors and operators. The KME seeds its registry with
 * them at every start (src/store/principals.ts); config/network.ts has checked that no CN names two of them.
 */
export function principalsOfConfig(config: Pick<Config, 'saes' | 'peers' | 'auditors' | 'operators'>): Principal[] {
  const base = (id: string, cn: string | undefined, sha256: string | undefined) => ({
    id,
    certificateCn: cn ?? id,
    ...(sha256 ? { certificateSha256: normalizeFingerprint(sha256) } : {}),
    status: 'active' as const,
    tags: {},
    source: 'config' as const,
  });
  return [
    ...config.saes.map((s): Principal => ({
      ...base(s.id, s.certificate_cn, s.certificate_sha256),
      role: 'sae',
      ...(s.allowed_peers ? { allowedPeers: s.allowed_peers } : {}),
      tags: s.tags ?? {},
    })),
    ...config.peers.map((p): Principal => ({ ...base(p.kme_id, p.certificate_cn, p.certificate_sha256), role: 'peer' })),
    ...config.auditors.map((a): Principal => ({ ...base(a.id, a.certificate_cn, a.certificate_sha256), role: 'auditor' })),
    ...config.operators.map((o): Principal => ({ ...base(o.id, o.certificate_cn, o.certificate_sha256), role: 'operator' })),
  ];
}

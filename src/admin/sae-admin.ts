import type { PrincipalRegistry } from '../auth/registry.js';
import { normalizeFingerprint } from '../auth/principals.js';
import { badRequest, conflict, notFound } from '../errors.js';
import type { Db } from '../store/db.js';
import { changePrincipalStatus, enrollPrincipal, loadPrincipal, loadPrincipals, PrincipalChangeError, type ChangeActor, type StoredPrincipal } from '../store/principals.js';
import type { EnrollSae, SaeView } from '../schemas/admin.js';

/**
 * What operators do to SAEs (the admin API's /admin/v1/saes, `kms sae …`), framework-free. Every change is one
 * transaction with its custody event (src/store/principals.ts) and is in this process's registry before the answer
 * leaves: the next request of that SAE, on any connection, sees it. Other KME processes see it within their poll.
 */
export class SaeAdmin {
  constructor(
    private readonly db: Db,
    private readonly registry: PrincipalRegistry,
    /** Tells the other replicas that the principals changed (the coordinator's publish). */
    private readonly announce: (topic: 'principals') => Promise<void> = async () => undefined,
  ) {}

  async list(status?: SaeView['status']): Promise<SaeView[]> {
    return (await loadPrincipals(this.db)).filter((p) => p.role === 'sae' && (!status || p.status === status)).map(view);
  }

  async show(saeId: string): Promise<SaeView> {
    const p = await loadPrincipal(this.db, 'sae', saeId);
    if (!p) throw notFound(`no SAE ${saeId} is registered at this KME`);
    return view(p);
  }

  async enroll(req: EnrollSae, by: ChangeActor): Promise<SaeView> {
    if (req.allowed_peers?.includes(req.sae_id)) throw badRequest(`allowed_peers: an SAE cannot share keys with itself (${req.sae_id})`);
    const enrolled = await this.change(() =>
      enrollPrincipal(
        this.db,
        {
          role: 'sae',
          id: req.sae_id,
          certificateCn: req.certificate_cn ?? req.sae_id,
          ...(req.certificate_sha256 ? { certificateSha256: normalizeFingerprint(req.certificate_sha256) } : {}),
          status: 'active',
          ...(req.allowed_peers ? { allowedPeers: req.allowed_peers } : {}),
          tags: req.tags ?? {},
          source: 'admin',
        },
        by,
      ),
    );
    return view(enrolled);
  }

  async setStatus(saeId: string, change: 'suspend' | 'resume' | 'revoke', by: ChangeActor, reason?: string): Promise<SaeView> {
    return view(await this.change(() => changePrincipalStatus(this.db, 'sae', saeId, change, by, reason)));
  }

  /** Runs a change, maps its refusals onto the API's errors, reloads the registry and tells the other replicas before answering. */
  private async change(run: () => Promise<StoredPrincipal>): Promise<StoredPrincipal> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof PrincipalChangeError) throw err.kind === 'not_found' ? notFound(err.message) : conflict(err.message);
      throw err;
    } finally {
      await this.registry.reload();
      await this.announce('principals');
    }
  }
}

function view(p: StoredPrincipal): SaeView {
  return {
    sae_id: p.id,
    certificate_cn: p.certificateCn,
    ...(p.certificateSha256 ? { certificate_sha256: p.certificateSha256 } : {}),
    status: p.status,
    ...(p.allowedPeers ? { allowed_peers: p.allowedPeers } : {}),
    tags: p.tags,
    source: p.source,
    ...(p.unlisted ? { unlisted: true } : {}),
    created_at: p.createdAt.toISOString(),
    changed_at: p.changedAt.toISOString(),
  };
}

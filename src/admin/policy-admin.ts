import { badRequest, conflict, notFound } from '../errors.js';
import type { PolicyBook } from '../policy/policy-book.js';
import type { PolicyBody, PolicyView } from '../schemas/admin-policies.js';
import type { Db } from '../store/db.js';
import { deletePolicy, pairOf, PolicyChangeError, setPolicy, type StoredPolicy } from '../store/policies.js';
import type { ChangeActor } from '../store/principals.js';

/**
 * What operators do to policies per SAE pair (the admin API's /admin/v1/policies, `kms policy …`), framework-free.
 * A change is in this process's book before the answer leaves; other processes reload within their poll. A policy
 * the config file sets is changed in the file, not here (409).
 */
export class PolicyAdmin {
  /** `announce` tells the other replicas that the policies changed (the coordinator's publish). */
  constructor(private readonly deps: { db: Db; book: PolicyBook; announce?: (topic: 'policies') => Promise<void> }) {}

  list(): PolicyView[] {
    return this.deps.book.all().map(view);
  }

  show(x: string, y: string): PolicyView {
    const p = this.deps.book.of(x, y);
    if (!p) throw notFound(`no policy for ${pairOf(x, y).join(' and ')} at this KME`);
    return view(p);
  }

  async set(x: string, y: string, body: PolicyBody, by: ChangeActor): Promise<PolicyView> {
    if (x === y) throw badRequest(`a policy is for a pair of two different SAEs, not ${x} twice`);
    const saes = pairOf(x, y);
    const stored = await this.change(() =>
      setPolicy(
        this.deps.db,
        {
          saes,
          ...(body.key_ttl_seconds !== undefined ? { keyTtlSeconds: body.key_ttl_seconds } : {}),
          ...(body.min_pool_keys !== undefined ? { minPoolKeys: body.min_pool_keys } : {}),
          ...(body.max_keys_per_minute !== undefined ? { maxKeysPerMinute: body.max_keys_per_minute } : {}),
          ...(body.link_failure !== undefined ? { linkFailure: body.link_failure } : {}),
          tags: body.tags ?? {},
          source: 'admin',
        },
        by,
      ),
    );
    return view(stored);
  }

  async delete(x: string, y: string, by: ChangeActor): Promise<{ deleted: boolean }> {
    const deleted = await this.change(() => deletePolicy(this.deps.db, pairOf(x, y), by));
    if (!deleted) throw notFound(`no policy for ${pairOf(x, y).join(' and ')} at this KME`);
    return { deleted };
  }

  private async change<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof PolicyChangeError) throw conflict(err.message);
      throw err;
    } finally {
      await this.deps.book.reload();
      await this.deps.announce?.('policies');
    }
  }
}

function view(p: StoredPolicy): PolicyView {
  return {
    saes: p.saes,
    ...(p.keyTtlSeconds !== undefined ? { key_ttl_seconds: p.keyTtlSeconds } : {}),
    ...(p.minPoolKeys !== undefined ? { min_pool_keys: p.minPoolKeys } : {}),
    ...(p.maxKeysPerMinute !== undefined ? { max_keys_per_minute: p.maxKeysPerMinute } : {}),
    link_failure: p.linkFailure,
    tags: p.tags,
    source: p.source,
    changed_at: p.changedAt.toISOString(),
  };
}

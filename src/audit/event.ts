import canonicalize from 'canonicalize';

/**
 * One custody event. Stored as RFC 8785 canonical JSON (`audit_event.body`); the table's other columns are an
 * index derived from that body by SQL, so the two can never disagree. Never carries key bytes: only key_IDs,
 * block positions, SAE IDs, certificate fingerprints and outcomes.
 */
export interface AuditEvent {
  operation: AuditOperation;
  outcome: 'ok' | 'refused' | 'failed';
  /** 'sae:SAE_A', 'kme:KME_A' for a KME (this one's own jobs, or a peer), 'auditor:AUD_1', 'operator:alice', or 'anonymous' when no certificate identified anyone. */
  actor: string;
  /** SHA-256 fingerprint of the client certificate (colon-separated hex), when there was one. */
  actorCert?: string;
  keyIds?: string[];
  detail?: Record<string, unknown>;
  at?: Date;
}

export type AuditOperation =
  | 'ingest' // blocks of material entered the pool (from this end's device, or as the link's primary announced)
  | 'ingest_confirm' // the peer holds the same material: the primary's blocks become AVAILABLE
  | 'ingest_lost' // the peer's device never had the material: the primary destroyed its copy unused
  | 'reserve' // key_IDs bound to material and held for slaves (at the master's KME until every peer confirms)
  | 'deliver_master' // enc_keys: key_IDs handed to the master SAE
  | 'deliver_slave' // dec_keys: key_IDs handed to one slave SAE
  | 'relay' // a key passed on to the next KME, one-time-pad encrypted with that link's material
  | 'destroy' // material erased once every named slave had it (or nobody at this KME will fetch it)
  | 'void' // keys or spent material destroyed after a failed or ambiguous relay, or at the owner's word
  | 'expire' // keys whose time-to-live ran out: material destroyed
  | 'set_aside' // stored material failed its integrity check: COMPROMISED, never handed out
  | 'status' // refused status requests only (successful ones change nothing)
  | 'prune' // sealed history up to a checkpoint was archived (a verified bundle) and its events removed
  | 'witness' // this KME cosigned (or refused to cosign) a peer KME's custody checkpoint
  | 'request' // a request refused before its operation was known (bad route, no certificate, …)
  | 'peer_request' // a KME-to-KME request refused
  | 'audit_request' // an auditor API request refused
  | 'suspend' // an operator put a hold on keys: no slave gets them here until resumed
  | 'resume' // an operator lifted the hold
  | 'revoke' // an operator revoked keys as compromised: live material erased, holders named
  | 'kek' // a KEK version was created and put in use, or destroyed in the HSM once nothing referred to it
  | 'tls' // the TLS server certificate, CA bundle and CRLs were reloaded (SIGHUP or an operator)
  | 'policy' // a policy per SAE pair was set, changed or deleted (by an operator, or from the config file)
  | 'pool' // an operator suspended, resumed, drained or scheduled the deletion of a link's pool, or cut its simulated link in a drill; or it was deleted
  | 'principal' // an SAE, operator, auditor or peer KME enrolled, changed, suspended, resumed or revoked
  | 'fallback' // a link's pairs began getting fallback keys (its QKD pool could not serve), or QKD material served again
  | 'admin_request'; // an admin API request refused

/** The canonical body: exactly the bytes the sealer (a later issue) will hash into the Merkle tree. */
export function auditBody(e: AuditEvent): string {
  const body: Record<string, unknown> = {
    v: 1,
    at: (e.at ?? new Date()).toISOString(),
    actor: e.actor,
    operation: e.operation,
    outcome: e.outcome,
    key_ids: e.keyIds ?? [],
  };
  if (e.actorCert) body.actor_cert = e.actorCert;
  if (e.detail && Object.keys(e.detail).length > 0) body.detail = e.detail;
  const text = canonicalize(body);
  if (text === undefined) throw new Error('audit event is not serialisable');
  return text;
}

/**
 * SQL that inserts the events given as a text[] of canonical bodies in parameter `$n`. Used inside the same
 * statement or transaction as the state change it records (no audit row, no key).
 */
export function insertAuditSql(n: number): string {
  return `INSERT INTO audit_event (at, actor, actor_cert, operation, outcome, key_ids, body)
    SELECT (e.j->>'at')::timestamptz, e.j->>'actor', e.j->>'actor_cert', e.j->>'operation', e.j->>'outcome',
           ARRAY(SELECT jsonb_array_elements_text(e.j->'key_ids'))::uuid[], e.body
      FROM (SELECT b AS body, b::jsonb AS j FROM unnest($${n}::text[]) AS b) AS e`;
}

/**
 * The frame of the published OpenAPI documents; @fastify/swagger fills in the paths from the route schemas.
 * `openapi/etsi-gs-qkd-014.json` (for SAEs) and `openapi/kme-peer.json` (for peer KMEs) are generated, committed;
 * test/routes/openapi.test.ts fails when the running service and those files disagree (regenerate with
 * `npm run openapi`).
 */
export const openapiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'QKD KMS — ETSI GS QKD 014 key delivery API',
    version: '1.1.1',
    description:
      'ETSI GS QKD 014 V1.1.1 REST API over mutual TLS. The caller is identified by its client certificate. ' +
      'All sizes are in bits. Errors always carry the ETSI Error body.',
  },
  servers: [{ url: 'https://localhost:8443' }],
  tags: [{ name: 'ETSI GS QKD 014' }, { name: 'KME to KME' }, { name: 'Custody log' }, { name: 'Administration' }],
};

export const peerDocumentInfo = {
  tag: 'KME to KME',
  info: {
    title: 'QKD KMS — KME-to-KME API',
    version: '1.0.0',
    description:
      'How the KMEs of a QKD network pair their links and relay keys (docs/network.md), over mutual TLS with KME ' +
      'certificates only. Key relay uses the message shapes of ETSI GS QKD 020 V1.1.1 (ext_keys, ext_keys/void), ' +
      'batched; extensions carry the vendor prefix qkms_. Material is identified by its position in a link key ' +
      'stream, never sent in the clear: a relayed key travels one-time-pad encrypted with the link material.',
  },
};

export const auditDocumentInfo = {
  tag: 'Custody log',
  info: {
    title: 'QKD KMS — auditor API',
    version: '1.0.0',
    description:
      "Read-only access to a KME's custody log (docs/custody.md), over mutual TLS with certificates of the auditor " +
      'role only (an SAE or KME certificate gets 401). Events are RFC 8785 canonical JSON; the sealer folds them, in ' +
      'order of sequence number, into an RFC 9162 Merkle tree and signs C2SP checkpoints with an HSM-held ECDSA P-256 ' +
      'key and an ML-DSA-65 key. Proofs are pinned to signed checkpoints; `kms audit verify` checks an export offline. ' +
      'Errors carry the ETSI 014 Error body.',
  },
};

export const adminDocumentInfo = {
  tag: 'Administration',
  info: {
    title: 'QKD KMS — admin API',
    version: '1.0.0',
    description:
      "How operators run a KME (docs/operators.md), over mutual TLS with certificates of the operator role only (an " +
      'SAE, auditor or KME certificate gets 401). SAEs: enroll, list, suspend, resume, revoke. Every change is an ' +
      'event of the custody log with the operator as its actor. The `kms sae …` commands call this API. Errors carry ' +
      'the ETSI 014 Error body; 404 names an unknown SAE and 409 a change its present state does not allow.',
  },
};

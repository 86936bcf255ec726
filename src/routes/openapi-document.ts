import { join } from 'node:path';
import Fastify from 'fastify';
import { registerDocumentedRoutes, splitOpenapi, type OpenapiDocuments } from './index.js';
import type { KeyService } from '../keys/key-service.js';
import type { PeerService } from '../peers/peer-service.js';
import { Principals } from '../auth/principals.js';
import { PROJECT_ROOT } from '../runtime-paths.js';
import type { KeyAdmin } from '../admin/key-admin.js';
import type { PoolAdmin } from '../admin/pool-admin.js';
import type { PolicyAdmin } from '../admin/policy-admin.js';
import type { TlsRotation } from '../tls-rotation.js';
import type { KekRotation } from '../lifecycle/kek-rotation.js';
import type { SaeAdmin } from '../admin/sae-admin.js';
import type { AuditorService } from '../audit/auditor-service.js';

/** The published contracts, committed. */
export const OPENAPI_FILES = {
  etsi: join(PROJECT_ROOT, 'openapi', 'etsi-gs-qkd-014.json'),
  peer: join(PROJECT_ROOT, 'openapi', 'kme-peer.json'),
  audit: join(PROJECT_ROOT, 'openapi', 'kme-audit.json'),
  admin: join(PROJECT_ROOT, 'openapi', 'kme-admin.json'),
};

/**
 * The OpenAPI documents the routes generate, built without a database, HSM or TLS: the routes are registered on
 * a bare app and never called. The running service serves the same documents at /openapi.json and
 * /kmapi/openapi.json and /audit/openapi.json.
 */
export async function generatedOpenapi(): Promise<OpenapiDocuments> {
  const app = Fastify();
  const unused = {} as KeyService & PeerService & AuditorService & SaeAdmin & KeyAdmin & PoolAdmin & PolicyAdmin & TlsRotation & KekRotation;
  await registerDocumentedRoutes(app, { keys: unused, peers: unused, auditor: unused, saeAdmin: unused, keyAdmin: unused, poolAdmin: unused, policyAdmin: unused, tlsRotation: unused, kek: unused, principals: new Principals() });
  await app.ready();
  const docs = splitOpenapi(() => app.swagger())();
  await app.close();
  return docs;
}

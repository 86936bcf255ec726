import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { registerDocumentedRoutes } from './index.js';
import type { KeyService } from '../keys/key-service.js';
import type { SaeRegistry } from '../auth/sae-registry.js';

/** The published contract, committed. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../openapi/etsi-gs-qkd-014.json', import.meta.url));

/**
 * The OpenAPI document the routes generate, built without a database, HSM or TLS: the routes are registered on
 * a bare app and never called. The running service serves the same document at /openapi.json.
 */
export async function generatedOpenapi(): Promise<unknown> {
  const app = Fastify();
  const unused = {} as KeyService & SaeRegistry;
  await registerDocumentedRoutes(app, { keys: unused, registry: unused });
  await app.ready();
  const doc = app.swagger();
  await app.close();
  return doc;
}

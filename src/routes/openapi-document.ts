import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import fastifySwagger from '@fastify/swagger';
import { etsi014Routes } from './etsi014/index.js';
import { openapiDocument } from './openapi.js';
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
  await app.register(fastifySwagger, { openapi: openapiDocument, hideUntagged: true });
  const unused = {} as KeyService & SaeRegistry;
  await app.register(etsi014Routes, { prefix: '/api/v1/keys', keys: unused, registry: unused });
  await app.ready();
  const doc = app.swagger();
  await app.close();
  return doc;
}

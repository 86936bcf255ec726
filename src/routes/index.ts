import fastifySwagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import type { Etsi014Options } from './etsi014/index.js';
import { etsi014Routes } from './etsi014/index.js';
import { openapiDocument } from './openapi.js';

/**
 * Registers the documented API — the OpenAPI generator, then the ETSI 014 routes — in one place, so that the
 * running service and `npm run openapi` (which registers the same on a bare app) cannot describe different routes.
 */
export async function registerDocumentedRoutes(app: FastifyInstance, opts: Etsi014Options): Promise<void> {
  await app.register(fastifySwagger, { openapi: openapiDocument, hideUntagged: true });
  await app.register(etsi014Routes, { prefix: '/api/v1/keys', ...opts });
}

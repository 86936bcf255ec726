import { join } from 'node:path';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { Principals } from '../auth/principals.js';
import type { KeyService } from '../keys/key-service.js';
import { PROJECT_ROOT } from '../runtime-paths.js';
import { SkipRouters } from './routers.js';
import { SKIP_TAG, skipRoutes, type SkipRouteOptions } from './routes.js';

/** The published SKIP contract, committed beside the ETSI one; test/skip/openapi.test.ts fails when it drifts. */
export const SKIP_OPENAPI_FILE = join(PROJECT_ROOT, 'openapi', 'cisco-skip.json');

const skipDocument = {
  openapi: '3.1.0',
  info: {
    title: 'QKD KMS — Cisco SKIP key provider API',
    version: '1.0.0',
    description:
      'The Secure Key Integration Protocol of draft-cisco-skip, for routers (IOS XE `crypto skip-client`), on a listener ' +
      'of its own (config `skip`, docs/skip.md) over TLS with a pre-shared key per router. Keys are those of the ETSI ' +
      'GS QKD 014 service: a router is an SAE, a keyId is the ETSI key_ID as 32 hex digits, and each key is fetched ' +
      'once by the remote router. Values are hex. Errors carry `{message}`.',
  },
  servers: [{ url: 'https://localhost:8444' }],
  tags: [{ name: SKIP_TAG }],
};

/** The generator and the routes, registered together so that the served routes and the document cannot differ. */
export async function registerSkipRoutes(app: FastifyInstance, opts: SkipRouteOptions): Promise<void> {
  await app.register(fastifySwagger, { openapi: skipDocument, hideUntagged: true });
  await app.register(skipRoutes, opts);
}

/** The SKIP OpenAPI document, from the route schemas on a bare app (routes registered, never called). */
export async function generatedSkipOpenapi(): Promise<unknown> {
  const app = Fastify();
  const routers = new SkipRouters({ listen: { host: '127.0.0.1', port: 0 }, min_tls_version: 'TLSv1.3', routers: [], remote_systems: [] });
  await registerSkipRoutes(app, { keys: {} as KeyService, routers, principals: new Principals() });
  await app.ready();
  const doc = app.swagger();
  await app.close();
  return doc;
}

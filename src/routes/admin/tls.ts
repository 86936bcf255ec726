import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { TlsReloadSchema, TlsSchema } from '../../schemas/admin-tls.js';
import { ErrorSchema } from '../../schemas/etsi014.js';
import type { TlsRotation } from '../../tls-rotation.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema };

/** The admin API's certificate rotation (registered inside the admin plugin, whose hook admits operators only). */
export const adminTlsRoutes: FastifyPluginAsyncTypebox<{ tlsRotation: TlsRotation; tags: string[] }> = async (app, { tlsRotation, tags }) => {
  app.get('/admin/v1/tls', { schema: { tags, summary: 'The TLS material in force', response: { 200: TlsSchema, ...errors } } }, () => tlsRotation.show());
  app.post(
    '/admin/v1/tls/reload',
    {
      schema: {
        tags,
        summary:
          'Reload the server certificate, CA bundle and CRLs from their files: new connections use them at once, open ones are checked on their next request; a bad file refuses the reload (400) and changes nothing',
        body: TlsReloadSchema,
        response: { 200: TlsSchema, ...errors },
      },
    },
    (request) => tlsRotation.reload(request.operator, request.body?.reason ?? 'kms tls reload'),
  );
};

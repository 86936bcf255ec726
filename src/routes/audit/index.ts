import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { AuditorService } from '../../audit/auditor-service.js';
import { auditorOf } from '../../auth/client-certificate.js';
import type { Principals } from '../../auth/principals.js';
import { unauthorized } from '../../errors.js';
import {
  CheckpointSchema,
  CheckpointsPageSchema,
  CheckpointsQuerySchema,
  ConsistencyProofSchema,
  ConsistencyQuerySchema,
  EventsPageSchema,
  EventsQuerySchema,
  ExportQuerySchema,
  InclusionProofSchema,
  InclusionQuerySchema,
  KeysSchema,
} from '../../schemas/audit.js';
import { ErrorSchema } from '../../schemas/etsi014.js';

export interface AuditRouteOptions {
  auditor: AuditorService;
  principals: Principals;
}

export const AUDIT_TAG = 'Custody log';
const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema };

/**
 * The auditor API (docs/custody.md): read-only access to the custody log for certificates of the auditor role. An
 * SAE's or a KME's certificate gets a 401 before any handler. Errors carry the ETSI Error body, as everywhere.
 */
export const auditRoutes: FastifyPluginAsyncTypebox<AuditRouteOptions> = async (app, { auditor, principals }) => {
  app.addHook('onRequest', async (request) => {
    const caller = auditorOf(request.raw.socket as TLSSocket, principals);
    if (!caller.ok) throw unauthorized(caller.reason);
  });
  const common = { tags: [AUDIT_TAG] };
  app.get(
    '/audit/v1/events',
    {
      schema: {
        ...common,
        summary: 'Events, in order of sequence number: all, or those of one key_ID or one SAE',
        querystring: EventsQuerySchema,
        response: { 200: EventsPageSchema, ...errors },
      },
    },
    (request) => auditor.events(request.query),
  );
  app.get(
    '/audit/v1/checkpoint',
    { schema: { ...common, summary: 'The latest signed checkpoint', response: { 200: CheckpointSchema, ...errors } } },
    () => auditor.latestCheckpoint(),
  );
  app.get(
    '/audit/v1/checkpoints',
    {
      schema: {
        ...common,
        summary: 'Signed checkpoints in order of tree size',
        querystring: CheckpointsQuerySchema,
        response: { 200: CheckpointsPageSchema, ...errors },
      },
    },
    (request) => auditor.checkpoints(request.query.from_size, request.query.limit),
  );
  app.get(
    '/audit/v1/proofs/inclusion',
    {
      schema: {
        ...common,
        summary: "Proof that an event is in a checkpoint's tree (RFC 9162 inclusion proof)",
        querystring: InclusionQuerySchema,
        response: { 200: InclusionProofSchema, ...errors },
      },
    },
    (request) => auditor.inclusion(request.query.seq, request.query.tree_size),
  );
  app.get(
    '/audit/v1/proofs/consistency',
    {
      schema: {
        ...common,
        summary: 'Proof that a later checkpoint extends an earlier one (RFC 9162 consistency proof)',
        querystring: ConsistencyQuerySchema,
        response: { 200: ConsistencyProofSchema, ...errors },
      },
    },
    (request) => auditor.consistency(request.query.first, request.query.second),
  );
  app.get(
    '/audit/v1/keys',
    { schema: { ...common, summary: 'The verifier keys that sign the checkpoints (to pin after checking them out of band)', response: { 200: KeysSchema, ...errors } } },
    () => auditor.vkeys(),
  );
  app.get(
    '/audit/v1/export',
    {
      schema: {
        ...common,
        summary: 'The export bundle, streamed (JSON Lines): events, gaps, checkpoints, verifier keys; for kms audit verify',
        querystring: ExportQuerySchema,
        response: { 200: { description: 'application/x-ndjson: one JSON value per line (docs/custody.md)', type: 'string' }, ...errors },
      },
    },
    async (request, reply) => {
      const lines = await auditor.exportLines(request.query.after_size); // a bad after_size fails here, before the 200
      async function* withNewlines() {
        for await (const l of lines) yield l + '\n';
      }
      // A stream, not the string the documented schema describes: the bundle can be larger than memory.
      return reply.type('application/x-ndjson').send(Readable.from(withNewlines()) as unknown as string);
    },
  );
};

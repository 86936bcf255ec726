import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { KeyAdmin } from '../../admin/key-admin.js';
import { badRequest } from '../../errors.js';
import {
  KEY_CHANGES,
  KeyChangeResultSchema,
  KeyChangeSchema,
  KeyPathSchema,
  KeySchema,
  LinkHoldersSchema,
  LinkPathSchema,
  ReceiptsSchema,
  ReceivedQuerySchema,
  SinceQuerySchema,
} from '../../schemas/admin-keys.js';
import { SaePathSchema } from '../../schemas/admin.js';
import { ErrorSchema } from '../../schemas/etsi014.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema };

const SUMMARIES: Record<(typeof KEY_CHANGES)[number], string> = {
  suspend: 'Suspend keys at this KME: no slave gets them here until resumed (their time-to-live keeps running)',
  resume: 'Resume suspended keys',
  revoke: 'Revoke keys as compromised: material erased here and voided at peer KMEs; answers every SAE that received them',
  destroy: 'Destroy keys: material erased here and voided at peer KMEs; slaves still waiting get 400 not found',
};

/**
 * The admin API's keys (registered inside the admin plugin, whose hook admits operators only): one key, changes to
 * keys in batches, and the custody questions "which keys did SAE X receive since T" and "which SAEs hold keys from
 * link L since T".
 */
export const adminKeyRoutes: FastifyPluginAsyncTypebox<{ keyAdmin: KeyAdmin; tags: string[] }> = async (app, { keyAdmin, tags }) => {
  app.get(
    '/admin/v1/keys/:key_id',
    { schema: { tags, summary: 'One key: its state here, who received it, its custody events', params: KeyPathSchema, response: { 200: KeySchema, ...errors } } },
    (request) => keyAdmin.show(request.params.key_id),
  );
  for (const change of KEY_CHANGES) {
    app.post(
      `/admin/v1/keys/${change}`,
      { schema: { tags, summary: SUMMARIES[change], body: KeyChangeSchema, response: { 200: KeyChangeResultSchema, ...errors } } },
      (request) => keyAdmin.change(change, request.body, request.operator),
    );
  }
  app.get(
    '/admin/v1/saes/:sae_id/keys',
    {
      schema: {
        tags,
        summary: 'The keys an SAE received from this KME since a time (from the custody log), oldest first, paginated',
        params: SaePathSchema,
        querystring: ReceivedQuerySchema,
        response: { 200: ReceiptsSchema, ...errors },
      },
    },
    (request) => {
      const { since, until, limit, after_seq } = request.query;
      if (until && Date.parse(until) <= Date.parse(since)) throw badRequest('until must be later than since');
      return keyAdmin.received({
        saeId: request.params.sae_id,
        since: new Date(since),
        ...(until ? { until: new Date(until) } : {}),
        limit: limit ?? 1000,
        ...(after_seq !== undefined ? { afterSeq: after_seq } : {}),
      });
    },
  );
  app.get(
    '/admin/v1/links/:link_id/holders',
    {
      schema: {
        tags,
        summary: "The SAEs that received from this KME keys made from a link's material since a time",
        params: LinkPathSchema,
        querystring: SinceQuerySchema,
        response: { 200: LinkHoldersSchema, ...errors },
      },
    },
    (request) => keyAdmin.holders(request.params.link_id, new Date(request.query.since)),
  );
};

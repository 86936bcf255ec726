import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { PolicyAdmin } from '../../admin/policy-admin.js';
import { DeletedSchema, PairPathSchema, PolicyBodySchema, PolicyListSchema, PolicySchema } from '../../schemas/admin-policies.js';
import { ErrorSchema } from '../../schemas/etsi014.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };

/** The admin API's policies per SAE pair (registered inside the admin plugin, whose hook admits operators only). */
export const adminPolicyRoutes: FastifyPluginAsyncTypebox<{ policyAdmin: PolicyAdmin; tags: string[] }> = async (app, { policyAdmin, tags }) => {
  app.get('/admin/v1/policies', { schema: { tags, summary: 'The policies per SAE pair of this KME', response: { 200: PolicyListSchema, ...errors } } }, () => ({
    policies: policyAdmin.list(),
  }));
  app.get(
    '/admin/v1/policies/:sae_a/:sae_b',
    { schema: { tags, summary: "One pair's policy (the pair either way round)", params: PairPathSchema, response: { 200: PolicySchema, ...errors } } },
    (request) => policyAdmin.show(request.params.sae_a, request.params.sae_b),
  );
  app.put(
    '/admin/v1/policies/:sae_a/:sae_b',
    {
      schema: {
        tags,
        summary: "Set a pair's policy (the whole policy: fields left out are unset); it applies from the next request",
        params: PairPathSchema,
        body: PolicyBodySchema,
        response: { 200: PolicySchema, ...errors },
      },
    },
    (request) => policyAdmin.set(request.params.sae_a, request.params.sae_b, request.body, request.operator),
  );
  app.delete(
    '/admin/v1/policies/:sae_a/:sae_b',
    { schema: { tags, summary: "Delete a pair's policy: the KME's defaults apply again", params: PairPathSchema, response: { 200: DeletedSchema, ...errors } } },
    (request) => policyAdmin.delete(request.params.sae_a, request.params.sae_b, request.operator),
  );
};

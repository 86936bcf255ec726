import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponses, DecKeysQuerySchema, KeyContainerSchema, KeyIdsSchema, MasterPathSchema } from '../../schemas/etsi014.js';
import type { Etsi014Options } from './index.js';

/**
 * /api/v1/keys/{master_SAE_ID}/dec_keys — ETSI 014 §5.4 "Get key with key IDs", called by a slave SAE.
 * The path names the master (Table 7; the §6.4 example that names the slave is a known defect).
 */
export const decKeysRoutes: FastifyPluginAsyncTypebox<Etsi014Options> = async (app, { keys }) => {
  const common = {
    summary: 'Get key with key IDs',
    description: 'Keys the master obtained for this slave SAE; each slave may fetch each key once.',
    tags: ['ETSI GS QKD 014'],
    params: MasterPathSchema,
    response: { 200: KeyContainerSchema, ...ErrorResponses },
  };
  app.get('/:master_SAE_ID/dec_keys', { schema: { ...common, querystring: DecKeysQuerySchema } }, (request) =>
    keys.getKeysWithIds(request.sae, request.params.master_SAE_ID, [request.query.key_ID]),
  );
  app.post('/:master_SAE_ID/dec_keys', { schema: { ...common, body: KeyIdsSchema } }, (request) =>
    keys.getKeysWithIds(
      request.sae,
      request.params.master_SAE_ID,
      request.body.key_IDs.map((k) => k.key_ID),
    ),
  );
};

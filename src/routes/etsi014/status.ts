import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponses, SlavePathSchema, StatusSchema } from '../../schemas/etsi014.js';
import type { Etsi014Options } from './index.js';


/** GET /api/v1/keys/{slave_SAE_ID}/status — ETSI 014 §5.2 "Get status". Encryptors poll it as a health probe. */
export const statusRoute: FastifyPluginAsyncTypebox<Etsi014Options> = async (app, { keys }) => {
  app.get(
    '/:slave_SAE_ID/status',
    {
      schema: {
        summary: 'Get status',
        description: 'Status of the key pool shared by the calling master SAE and the slave SAE.',
        tags: ['ETSI GS QKD 014'],
        params: SlavePathSchema,
        response: { 200: StatusSchema, ...ErrorResponses },
      },
    },
    (request) => keys.status(request.sae, request.params.slave_SAE_ID),
  );
};

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponses, EncKeysQuerySchema, KeyContainerSchema, KeyRequestSchema, SlavePathSchema } from '../../schemas/etsi014.js';
import type { Etsi014Options } from './index.js';

/**
 * /api/v1/keys/{slave_SAE_ID}/enc_keys — ETSI 014 §5.3 "Get key", called by the master SAE.
 * GET takes `number` and `size` as query parameters; everything else (multicast, extensions) needs POST.
 */
export const encKeysRoutes: FastifyPluginAsyncTypebox<Etsi014Options> = async (app, { keys }) => {
  const common = {
    summary: 'Get key',
    description: 'New keys shared with the slave SAE (and any additional slaves); removed from the pool.',
    tags: ['ETSI GS QKD 014'],
    params: SlavePathSchema,
    response: { 200: KeyContainerSchema, ...ErrorResponses },
  };
  // A client that went away before its keys were committed must not have them burned: the key service checks.
  const gone = (request: { raw: { socket: { destroyed: boolean } | null } }) => () => request.raw.socket?.destroyed ?? true;
  app.get('/:slave_SAE_ID/enc_keys', { schema: { ...common, querystring: EncKeysQuerySchema } }, (request) =>
    keys.getKeys(request.sae, request.params.slave_SAE_ID, request.query, gone(request)),
  );
  app.post('/:slave_SAE_ID/enc_keys', { schema: { ...common, body: KeyRequestSchema } }, (request) =>
    keys.getKeys(request.sae, request.params.slave_SAE_ID, request.body, gone(request)),
  );
};

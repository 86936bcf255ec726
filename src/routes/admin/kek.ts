import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { HsmUnavailableError } from '../../hsm/key-wrapper.js';
import type { KekRotation } from '../../lifecycle/kek-rotation.js';
import { unavailable } from '../../errors.js';
import { KekRotateSchema, KekStatusSchema } from '../../schemas/admin-kek.js';
import { ErrorSchema } from '../../schemas/etsi014.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema };

/** The admin API's KEK rotation (registered inside the admin plugin, whose hook admits operators only). */
export const adminKekRoutes: FastifyPluginAsyncTypebox<{ kek: KekRotation; tags: string[] }> = async (app, { kek, tags }) => {
  const hsm = <T>(run: () => Promise<T>) =>
    run().catch((err: unknown) => {
      if (err instanceof HsmUnavailableError) throw unavailable(`the HSM is unavailable: ${err.message}`);
      throw err;
    });
  app.get(
    '/admin/v1/kek',
    { schema: { tags, summary: 'The KEK versions, what each still seals, and how much the re-wrap has left', response: { 200: KekStatusSchema, ...errors } } },
    () => hsm(() => kek.status()),
  );
  app.post(
    '/admin/v1/kek/rotate',
    {
      schema: {
        tags,
        summary: 'Create a new KEK version in the HSM and seal new material under it at once; a background re-wrap moves the rest and the old version is destroyed once nothing refers to it',
        body: KekRotateSchema,
        response: { 200: KekStatusSchema, ...errors },
      },
    },
    (request) => hsm(() => kek.rotate(request.operator, request.body?.reason)),
  );
};

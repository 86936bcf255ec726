import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { TLSSocket } from 'node:tls';
import type { KeyAdmin } from '../../admin/key-admin.js';
import type { PoolAdmin } from '../../admin/pool-admin.js';
import type { PolicyAdmin } from '../../admin/policy-admin.js';
import type { TlsRotation } from '../../tls-rotation.js';
import type { KekRotation } from '../../lifecycle/kek-rotation.js';
import type { SaeAdmin } from '../../admin/sae-admin.js';
import { operatorOf } from '../../auth/client-certificate.js';
import type { Principals } from '../../auth/principals.js';
import { unauthorized } from '../../errors.js';
import { EnrollSaeSchema, SaeListQuerySchema, SaeListSchema, SaePathSchema, SaeSchema, StatusChangeSchema } from '../../schemas/admin.js';
import { ErrorSchema } from '../../schemas/etsi014.js';
import type { ChangeActor } from '../../store/principals.js';
import { adminKeyRoutes } from './keys.js';
import { adminPoolRoutes } from './pools.js';
import { adminPolicyRoutes } from './policies.js';
import { adminTlsRoutes } from './tls.js';
import { adminKekRoutes } from './kek.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The operator proven by the client certificate, as the custody log names it; set by the admin plugin. */
    operator: ChangeActor;
  }
}

export interface AdminRouteOptions {
  saeAdmin: SaeAdmin;
  keyAdmin: KeyAdmin;
  poolAdmin: PoolAdmin;
  policyAdmin: PolicyAdmin;
  tlsRotation: TlsRotation;
  kek: KekRotation;
  principals: Principals;
}

export const ADMIN_TAG = 'Administration';
const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };

/**
 * The admin API (docs/operators.md), for certificates of the operator role only: an SAE's, auditor's or KME's
 * certificate gets a 401 before any handler. Every change is recorded in the custody log with the operator as its
 * actor. Errors carry the ETSI Error body, as everywhere.
 */
export const adminRoutes: FastifyPluginAsyncTypebox<AdminRouteOptions> = async (app, { saeAdmin, keyAdmin, poolAdmin, policyAdmin, tlsRotation, kek, principals }) => {
  app.decorateRequest('operator', undefined as unknown as ChangeActor);
  app.addHook('onRequest', async (request) => {
    const caller = operatorOf(request.raw.socket as TLSSocket, principals);
    if (!caller.ok) throw unauthorized(caller.reason);
    request.operator = { actor: `operator:${caller.operatorId}`, actorCert: caller.certSha256 };
  });
  const common = { tags: [ADMIN_TAG] };
  app.get(
    '/admin/v1/saes',
    { schema: { ...common, summary: 'The SAEs of this KME', querystring: SaeListQuerySchema, response: { 200: SaeListSchema, ...errors } } },
    async (request) => ({ saes: await saeAdmin.list(request.query.status) }),
  );
  app.post(
    '/admin/v1/saes',
    {
      schema: {
        ...common,
        summary: 'Enroll an SAE: a certificate identity becomes an SAE ID, with its allowed peers and tags',
        body: EnrollSaeSchema,
        response: { 200: SaeSchema, ...errors },
      },
    },
    (request) => saeAdmin.enroll(request.body, request.operator),
  );
  app.get(
    '/admin/v1/saes/:sae_id',
    { schema: { ...common, summary: 'One SAE', params: SaePathSchema, response: { 200: SaeSchema, ...errors } } },
    (request) => saeAdmin.show(request.params.sae_id),
  );
  const changes = {
    suspend: 'Suspend an SAE: it gets no key from its next request on, on open connections too, until resumed',
    resume: 'Resume a suspended SAE',
    revoke: 'Revoke an SAE for good: its ID and certificate name are never admitted again',
  } as const;
  for (const [change, summary] of Object.entries(changes) as Array<[keyof typeof changes, string]>) {
    app.post(
      `/admin/v1/saes/:sae_id/${change}`,
      { schema: { ...common, summary, params: SaePathSchema, body: StatusChangeSchema, response: { 200: SaeSchema, ...errors } } },
      (request) => saeAdmin.setStatus(request.params.sae_id, change, request.operator, request.body?.reason),
    );
  }
  await app.register(adminKeyRoutes, { keyAdmin, tags: [ADMIN_TAG] });
  await app.register(adminPoolRoutes, { poolAdmin, tags: [ADMIN_TAG] });
  await app.register(adminPolicyRoutes, { policyAdmin, tags: [ADMIN_TAG] });
  await app.register(adminTlsRoutes, { tlsRotation, tags: [ADMIN_TAG] });
  await app.register(adminKekRoutes, { kek, tags: [ADMIN_TAG] });
};

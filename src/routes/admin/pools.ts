import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { PoolAdmin } from '../../admin/pool-admin.js';
import {
  OUTAGE_DRILL_NOTE,
  OutageDrillResultSchema,
  OutageDrillSchema,
  PoolChangeBodySchema,
  PoolListSchema,
  PoolPathSchema,
  PoolSchema,
  ScheduleDeletionSchema,
} from '../../schemas/admin-pools.js';
import { ErrorSchema } from '../../schemas/etsi014.js';
import type { PoolChange } from '../../store/pool-states.js';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };

const CHANGES: Array<{ path: string; change: Exclude<PoolChange, 'schedule_deletion'>; summary: string }> = [
  { path: 'suspend', change: 'suspend', summary: 'Suspend a pool: no keys or one-time pads are made from it here (503); its device is still read' },
  { path: 'resume', change: 'resume', summary: 'Resume a suspended or draining pool' },
  { path: 'drain', change: 'drain', summary: 'Drain a pool: keys are still made from it, its device is no longer read' },
  { path: 'cancel-deletion', change: 'cancel_deletion', summary: 'Cancel a scheduled deletion: the pool goes back to suspended, never straight to active' },
];

/**
 * The admin API's pools (registered inside the admin plugin, whose hook admits operators only). A pool is one link's
 * material at this KME; each end of a paired link has its own.
 */
export const adminPoolRoutes: FastifyPluginAsyncTypebox<{ poolAdmin: PoolAdmin; tags: string[] }> = async (app, { poolAdmin, tags }) => {
  app.get('/admin/v1/pools', { schema: { tags, summary: 'The pools of this KME, one per link', response: { 200: PoolListSchema, ...errors } } }, async () => ({
    pools: await poolAdmin.list(),
  }));
  app.get(
    '/admin/v1/pools/:link_id',
    { schema: { tags, summary: 'One pool', params: PoolPathSchema, response: { 200: PoolSchema, ...errors } } },
    (request) => poolAdmin.show(request.params.link_id),
  );
  for (const { path, change, summary } of CHANGES) {
    app.post(
      `/admin/v1/pools/:link_id/${path}`,
      { schema: { tags, summary, params: PoolPathSchema, body: PoolChangeBodySchema, response: { 200: PoolSchema, ...errors } } },
      (request) => poolAdmin.change(request.params.link_id, change, request.operator, { ...(request.body?.reason ? { reason: request.body.reason } : {}) }),
    );
  }
  app.post(
    '/admin/v1/pools/:link_id/schedule-deletion',
    {
      schema: {
        tags,
        summary: "Schedule a pool's deletion after a waiting period: no keys from it meanwhile, its device not read; cancellable until then",
        params: PoolPathSchema,
        body: ScheduleDeletionSchema,
        response: { 200: PoolSchema, ...errors },
      },
    },
    (request) =>
      poolAdmin.change(request.params.link_id, 'schedule_deletion', request.operator, {
        waitSeconds: request.body.wait_seconds,
        ...(request.body.reason ? { reason: request.body.reason } : {}),
      }),
  );
  app.post(
    '/admin/v1/pools/:link_id/outage',
    {
      schema: {
        tags,
        summary: "Take this KME's simulated QKD device of a link down for some seconds (a fault drill)",
        description: OUTAGE_DRILL_NOTE,
        params: PoolPathSchema,
        body: OutageDrillSchema,
        response: { 200: OutageDrillResultSchema, ...errors },
      },
    },
    (request) => poolAdmin.outage(request.params.link_id, request.body.seconds, request.operator),
  );
};

import fastifySwagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import type { Etsi014Options } from './etsi014/index.js';
import { etsi014Routes } from './etsi014/index.js';
import { adminDocumentInfo, auditDocumentInfo, openapiDocument, peerDocumentInfo } from './openapi.js';
import { adminRoutes, type AdminRouteOptions } from './admin/index.js';
import { auditRoutes, type AuditRouteOptions } from './audit/index.js';
import { peerRoutes, type PeerRouteOptions } from './peer/index.js';

/**
 * Registers the documented APIs — the OpenAPI generator, the ETSI 014 routes, the KME-to-KME routes — in one place,
 * so that the running service and `npm run openapi` (which registers the same on a bare app) cannot describe
 * different routes.
 */
export async function registerDocumentedRoutes(app: FastifyInstance, opts: Etsi014Options & PeerRouteOptions & AuditRouteOptions & AdminRouteOptions): Promise<void> {
  await app.register(fastifySwagger, { openapi: openapiDocument, hideUntagged: true });
  await app.register(etsi014Routes, { prefix: '/api/v1/keys', keys: opts.keys, principals: opts.principals });
  await app.register(peerRoutes, { peers: opts.peers, principals: opts.principals });
  await app.register(auditRoutes, { auditor: opts.auditor, principals: opts.principals });
  await app.register(adminRoutes, { saeAdmin: opts.saeAdmin, keyAdmin: opts.keyAdmin, poolAdmin: opts.poolAdmin, policyAdmin: opts.policyAdmin, tlsRotation: opts.tlsRotation, kek: opts.kek, principals: opts.principals });
}

export interface OpenapiDocuments {
  /** The ETSI GS QKD 014 API SAEs call (openapi/etsi-gs-qkd-014.json). */
  etsi: unknown;
  /** The KME-to-KME API (openapi/kme-peer.json). */
  peer: unknown;
  /** The auditor API (openapi/kme-audit.json). */
  audit: unknown;
  /** The admin API (openapi/kme-admin.json). */
  admin: unknown;
}

/**
 * Splits the one generated document into the two published contracts, by path. Computed once, on first use (the
 * routes are all registered by then).
 */
export function splitOpenapi(generate: () => unknown): () => OpenapiDocuments {
  let docs: OpenapiDocuments | undefined;
  return () => {
    if (docs) return docs;
    const all = generate() as { paths?: Record<string, unknown>; info: object; tags?: Array<{ name: string }> };
    const pick = (keep: (path: string) => boolean) => Object.fromEntries(Object.entries(all.paths ?? {}).filter(([p]) => keep(p)));
    const isPeer = (p: string) => p.startsWith('/kmapi/') || p.startsWith('/peer/');
    const isAudit = (p: string) => p.startsWith('/audit/');
    const isAdmin = (p: string) => p.startsWith('/admin/');
    const others = [peerDocumentInfo.tag, auditDocumentInfo.tag, adminDocumentInfo.tag];
    docs = {
      etsi: { ...all, tags: all.tags?.filter((t) => !others.includes(t.name)), paths: pick((p) => !isPeer(p) && !isAudit(p) && !isAdmin(p)) },
      peer: {
        ...all,
        info: peerDocumentInfo.info,
        tags: [{ name: peerDocumentInfo.tag }],
        paths: pick(isPeer),
      },
      audit: {
        ...all,
        info: auditDocumentInfo.info,
        tags: [{ name: auditDocumentInfo.tag }],
        paths: pick(isAudit),
      },
      admin: {
        ...all,
        info: adminDocumentInfo.info,
        tags: [{ name: adminDocumentInfo.tag }],
        paths: pick(isAdmin),
      },
    };
    return docs;
  };
}

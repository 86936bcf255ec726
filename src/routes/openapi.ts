/**
 * The frame of the published OpenAPI document; @fastify/swagger fills in the paths from the route schemas.
 * `openapi/etsi-gs-qkd-014.json` is the generated document, committed; test/routes/openapi.test.ts fails when
 * the running service and that file disagree (regenerate with `npm run openapi`).
 */
export const openapiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'QKD KMS — ETSI GS QKD 014 key delivery API',
    version: '1.1.1',
    description:
      'ETSI GS QKD 014 V1.1.1 REST API over mutual TLS. The caller is identified by its client certificate. ' +
      'All sizes are in bits. Errors always carry the ETSI Error body.',
  },
  servers: [{ url: 'https://localhost:8443' }],
  tags: [{ name: 'ETSI GS QKD 014' }],
};

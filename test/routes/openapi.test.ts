import { readFileSync } from 'node:fs';
import t from 'tap';
import { generatedOpenapi, OPENAPI_FILES } from '../../src/routes/openapi-document.js';

// The published contracts (openapi/) must be exactly what the route schemas generate. When this fails, the routes
// changed: review the change to the contract, then run `npm run openapi` and commit the new files.
const published = (which: keyof typeof OPENAPI_FILES) => JSON.parse(readFileSync(OPENAPI_FILES[which], 'utf8'));

t.test('openapi/etsi-gs-qkd-014.json, kme-peer.json and kme-audit.json match the route schemas', async (t) => {
  const docs = await generatedOpenapi();
  t.same(docs.etsi, published('etsi'), 'ETSI 014 contract');
  t.same(docs.peer, published('peer'), 'KME-to-KME contract');
  t.same(docs.audit, published('audit'), 'auditor contract');
});

t.test('the ETSI contract covers the three operations in their GET and POST forms, and nothing else', async (t) => {
  const doc = published('etsi');
  t.equal(doc.openapi, '3.1.0');
  t.ok(doc.paths['/api/v1/keys/{slave_SAE_ID}/status'].get);
  for (const path of ['/api/v1/keys/{slave_SAE_ID}/enc_keys', '/api/v1/keys/{master_SAE_ID}/dec_keys']) {
    t.ok(doc.paths[path].get, `GET ${path}`);
    t.ok(doc.paths[path].post, `POST ${path}`);
    for (const status of ['200', '400', '401', '503']) t.ok(doc.paths[path].post.responses[status], `${path} ${status}`);
  }
  t.same(Object.keys(doc.paths).filter((p) => !p.startsWith('/api/v1/keys/')), [], 'no KME-to-KME route in the SAE contract');
});

t.test('the KME-to-KME contract has the relay, void and link routes with Error bodies', async (t) => {
  const doc = published('peer');
  for (const path of ['/kmapi/v1/ext_keys', '/kmapi/v1/ext_keys/void', '/peer/v1/links/{link_id}/material', '/peer/v1/links/{link_id}/sync']) {
    t.ok(doc.paths[path]?.post, `POST ${path}`);
    for (const status of ['200', '400', '401', '503']) t.ok(doc.paths[path]?.post?.responses[status], `${path} ${status}`);
  }
});

t.test('the auditor contract has its read-only routes with Error bodies, and only those', async (t) => {
  const doc = published('audit');
  const paths = ['/audit/v1/events', '/audit/v1/checkpoint', '/audit/v1/checkpoints', '/audit/v1/proofs/inclusion', '/audit/v1/proofs/consistency', '/audit/v1/keys', '/audit/v1/export'];
  t.same(Object.keys(doc.paths).sort(), [...paths].sort());
  for (const path of paths) {
    t.ok(doc.paths[path].get, `GET ${path}`);
    for (const status of ['200', '400', '401', '404']) t.ok(doc.paths[path].get.responses[status], `${path} ${status}`);
  }
});

import { readFileSync } from 'node:fs';
import t from 'tap';
import { generatedOpenapi, OPENAPI_FILE } from '../../src/routes/openapi-document.js';

// The published contract (openapi/) must be exactly what the route schemas generate. When this fails, the routes
// changed: review the change to the contract, then run `npm run openapi` and commit the new file.
t.test('openapi/etsi-gs-qkd-014.json matches the route schemas', async (t) => {
  const published = JSON.parse(readFileSync(OPENAPI_FILE, 'utf8'));
  t.same(await generatedOpenapi(), published);
});

t.test('the contract covers the three ETSI 014 operations in their GET and POST forms', async (t) => {
  const doc = JSON.parse(readFileSync(OPENAPI_FILE, 'utf8'));
  t.equal(doc.openapi, '3.1.0');
  t.ok(doc.paths['/api/v1/keys/{slave_SAE_ID}/status'].get);
  for (const path of ['/api/v1/keys/{slave_SAE_ID}/enc_keys', '/api/v1/keys/{master_SAE_ID}/dec_keys']) {
    t.ok(doc.paths[path].get, `GET ${path}`);
    t.ok(doc.paths[path].post, `POST ${path}`);
    for (const status of ['200', '400', '401', '503']) t.ok(doc.paths[path].post.responses[status], `${path} ${status}`);
  }
});

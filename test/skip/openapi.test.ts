import { readFileSync } from 'node:fs';
import t from 'tap';
import { generatedSkipOpenapi, SKIP_OPENAPI_FILE } from '../../src/skip/openapi.js';

// openapi/cisco-skip.json must be exactly what the SKIP route schemas generate. When this fails, the SKIP routes
// changed: review the contract change, run `npm run openapi` and commit the file.
t.test('openapi/cisco-skip.json matches the SKIP route schemas', async (t) => {
  const published = JSON.parse(readFileSync(SKIP_OPENAPI_FILE, 'utf8'));
  t.same(await generatedSkipOpenapi(), published);
  t.same(Object.keys(published.paths).sort(), ['/capabilities', '/entropy', '/key', '/key/{keyId}'], 'the four SKIP operations, nothing else');
  for (const [path, item] of Object.entries(published.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)) {
    t.same(Object.keys(item), ['get'], `${path}: GET only`);
    for (const status of ['200', '400', '401', '503']) t.ok(item.get!.responses[status], `${path} ${status}`);
  }
});

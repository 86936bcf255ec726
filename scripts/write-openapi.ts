// Regenerates openapi/etsi-gs-qkd-014.json, kme-peer.json, kme-audit.json and kme-admin.json from the route schemas (`npm run openapi`).
// test/routes/openapi.test.ts fails when the committed files and the running service disagree.
import { writeFileSync } from 'node:fs';
import { generatedOpenapi, OPENAPI_FILES } from '../src/routes/openapi-document.js';
import { generatedSkipOpenapi, SKIP_OPENAPI_FILE } from '../src/skip/openapi.js';

const docs = await generatedOpenapi();
for (const which of ['etsi', 'peer', 'audit', 'admin'] as const) {
  writeFileSync(OPENAPI_FILES[which], JSON.stringify(docs[which], null, 2) + '\n');
  console.log(`wrote ${OPENAPI_FILES[which]}`);
}
// The Cisco SKIP listener's contract (its own listener, its own document; test/skip/openapi.test.ts).
writeFileSync(SKIP_OPENAPI_FILE, JSON.stringify(await generatedSkipOpenapi(), null, 2) + '\n');
console.log(`wrote ${SKIP_OPENAPI_FILE}`);

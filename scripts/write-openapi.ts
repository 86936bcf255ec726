// Regenerates openapi/etsi-gs-qkd-014.json from the route schemas (`npm run openapi`).
// test/routes/openapi.test.ts fails when the committed file and the running service disagree.
import { writeFileSync } from 'node:fs';
import { generatedOpenapi, OPENAPI_FILE } from '../src/routes/openapi-document.js';

writeFileSync(OPENAPI_FILE, JSON.stringify(await generatedOpenapi(), null, 2) + '\n');
console.log(`wrote ${OPENAPI_FILE}`);

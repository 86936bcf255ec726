// The entry point of the PKCS#11 signing thread (src/hsm/pkcs11-signing-worker.ts). Plain JavaScript for the reason
// pkcs11-worker-entry.cjs gives (compiled to dist/, the worker starts from its own .js instead): a worker thread starts without the TypeScript loader, so register tsx's CommonJS
// hooks for this thread, then load the worker.
require('tsx/cjs/api').register();
require('./pkcs11-signing-worker.ts');

// The entry of test/hsm/share-thread.ts as a worker thread: a worker starts without the TypeScript loader (see
// src/hsm/pkcs11-worker-entry.cjs), so register tsx's CommonJS hooks for this thread, then load it.
require('tsx/cjs/api').register();
require('./share-thread.ts');

// The entry point of the ML-DSA signing thread (src/audit/ml-dsa-thread-worker.ts). Plain JavaScript for the reason
// src/hsm/pkcs11-worker-entry.cjs gives: a worker thread starts without the TypeScript loader.
require('tsx/cjs/api').register();
require('./ml-dsa-thread-worker.ts');

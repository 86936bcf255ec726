// The entry point of a PKCS#11 worker thread (src/hsm/pkcs11-worker.ts), in plain JavaScript because a worker
// thread starts without the TypeScript loader the KME runs under: on Node 20, tsx registers its hooks for the main
// thread only (with `--import tsx`, the tsx CLI or `register()` alike). So register tsx for this thread, then load
// the worker. Its CommonJS hooks, not its ESM ones: those run in a hooks thread of their own, which would double
// the worker's start-up time (~0.15 s here against ~0.45 s on the loaded 2-core dev VM, Node alone ~0.1 s). So the
// worker's modules must load as CommonJS too, as tsx compiles them: no top-level await, no import.meta.
require('tsx/cjs/api').register();
require('./pkcs11-worker.ts');

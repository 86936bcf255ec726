// One place that undoes everything the benchmark set up, whatever way the run ends: normal end, a thrown error,
// or Ctrl-C / SIGTERM. Steps run in reverse order of registration, each at most once, each failure only logged,
// so a stuck step cannot keep the database from being dropped.

type Step = { what: string; run: () => Promise<unknown> | unknown };
const steps: Step[] = [];
let running: Promise<void> | undefined;

export function onCleanup(what: string, run: Step['run']): void {
  steps.push({ what, run });
}

export function cleanup(): Promise<void> {
  running ??= (async () => {
    while (steps.length > 0) {
      const step = steps.pop()!;
      try {
        await step.run();
      } catch (err) {
        console.error(`cleanup: ${step.what} failed: ${(err as Error).message}`);
      }
    }
  })();
  return running;
}

/** Ctrl-C, a kill or a closed terminal: clean up, then exit with the conventional 128+signal code. */
export function cleanUpOnSignals(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping and cleaning up…`);
      // A second Ctrl-C while cleaning up should not be swallowed forever.
      const hard = setTimeout(() => process.exit(code), 20_000);
      hard.unref();
      void cleanup().finally(() => process.exit(code));
    });
  }
}

/**
 * Runs a benchmark script's main: a failure is printed as "`what` failed" with its stack; either way everything set
 * up is cleaned up, and the process exits (autocannon and agents may leave timers behind; the run is over).
 */
export function runScript(what: string, main: () => Promise<void>): void {
  main()
    .catch((err: Error) => {
      console.error(`\n${what} failed: ${err.stack ?? err}`);
      process.exitCode = 1;
    })
    .finally(async () => {
      await cleanup();
      process.exit(process.exitCode ?? 0);
    });
}

// Which part of the benchmark is running now, as labelled windows on the machine's monotonic clock. Two readers:
// the RSS sampler (memory.ts) tags each sample with the window it fell in, and the CPU profile reader (profile.ts)
// cuts each KME's --cpu-prof file into the same windows. That second use is why the clock is process.hrtime in
// microseconds: on Linux it is CLOCK_MONOTONIC, the clock V8 stamps profile samples with (startTime, timeDeltas),
// so a window taken here selects the right samples in a child's profile without any message to the child.

export interface Window {
  label: string;
  fromUs: number;
  /** Undefined while the window is still open. */
  toUs?: number;
}

const windows: Window[] = [];

export const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** Starts a window labelled `label`, ending the one that was open (windows never overlap). */
export function enter(label: string): void {
  const t = nowUs();
  const open = windows[windows.length - 1];
  if (open && open.toUs === undefined) open.toUs = t;
  windows.push({ label, fromUs: t });
}

/** Ends the open window without starting another (time between stages belongs to no phase). */
export function leave(): void {
  const open = windows[windows.length - 1];
  if (open && open.toUs === undefined) open.toUs = nowUs();
}

export function current(): string | undefined {
  const open = windows[windows.length - 1];
  return open && open.toUs === undefined ? open.label : undefined;
}

/** Every window so far; an open one is reported as ending now. */
export function allWindows(): Array<Required<Window>> {
  const t = nowUs();
  return windows.map((w) => ({ label: w.label, fromUs: w.fromUs, toUs: w.toUs ?? t }));
}

/**
 * The `ip -batch` lines that move a static-SAK MACsec port from one state to the next. Pure: the connector runs the
 * lines and records the state; tests compare the text byte for byte.
 *
 * Association numbers (AN 0..3) rotate with the keys: the key in service transmits on AN n, the next one is staged
 * on AN n+1 (mod 4). Both ends derive AN from the AN in service, not from a counter of keys seen, so a key one end
 * staged and the agents then abandoned does not shift the numbering (its SA is replaced by the next key's).
 */
export interface StaticSa {
  keyId: string;
  /** Whether the transmit SA exists too (from activate), or only the receive SA (from stage). */
  tx: boolean;
}

export interface StaticState {
  /** SAs this connector created, by AN. */
  sas: Partial<Record<0 | 1 | 2 | 3, StaticSa>>;
  /** The AN the port transmits on (`encodingsa`), null before the first key. */
  activeAn: 0 | 1 | 2 | 3 | null;
  /** Failed closed: the MACsec interface was set down. */
  down: boolean;
}

export type An = 0 | 1 | 2 | 3;

export const EMPTY_STATE: StaticState = { sas: {}, activeAn: null, down: false };

export interface StaticPort {
  /** The MACsec interface (made by the operator with `ip link add link PORT NAME type macsec …`). */
  device: string;
  /** The peer's secure channel as iproute2 names it: `port P address MAC`. */
  peerSci: string;
}

/** One batch line and the state change it makes once `ip` has run it. */
export interface Step {
  line: string;
  apply(state: StaticState): StaticState;
}

export interface KeyHex {
  keyId: string;
  /** The key_ID's 16 bytes as hex: the SA's key identifier. */
  kidHex: string;
  keyHex: string;
}

export function findAn(state: StaticState, keyId: string): An | null {
  for (const an of [0, 1, 2, 3] as const) if (state.sas[an]?.keyId === keyId) return an;
  return null;
}

export function nextAn(state: StaticState): An {
  return state.activeAn === null ? 0 : (((state.activeAn + 1) % 4) as An);
}

const withSa = (state: StaticState, an: An, sa: StaticSa | undefined): StaticState => {
  const sas = { ...state.sas };
  if (sa) sas[an] = sa;
  else delete sas[an];
  return { ...state, sas };
};

function removeSa(port: StaticPort, state: StaticState, an: An): Step[] {
  const sa = state.sas[an];
  if (!sa) return [];
  const steps: Step[] = [];
  if (sa.tx) steps.push({ line: `macsec del ${port.device} tx sa ${an}`, apply: (s) => withSa(s, an, { ...sa, tx: false }) });
  steps.push({ line: `macsec del ${port.device} rx ${port.peerSci} sa ${an}`, apply: (s) => withSa(s, an, undefined) });
  return steps;
}

/** Stage: a receive SA for the next AN, so the peer may switch first. Nothing when the key is already staged. */
export function planStage(port: StaticPort, state: StaticState, key: KeyHex): Step[] {
  if (findAn(state, key.keyId) !== null) return [];
  const an = nextAn(state);
  return [
    ...removeSa(port, state, an), // a key staged here and then abandoned by the agents
    {
      line: `macsec add ${port.device} rx ${port.peerSci} sa ${an} pn 1 on key ${key.kidHex} ${key.keyHex}`,
      apply: (s) => withSa(s, an, { keyId: key.keyId, tx: false }),
    },
  ];
}

/** Activate: the transmit SA on the staged AN and the switch of `encodingsa` to it (staging first if needed). */
export function planActivate(port: StaticPort, state: StaticState, key: KeyHex): Step[] {
  const staged = planStage(port, state, key);
  const after = staged.reduce((s, step) => step.apply(s), state);
  const an = findAn(after, key.keyId)!;
  const steps = [...staged];
  if (!after.sas[an]!.tx) {
    steps.push({ line: `macsec add ${port.device} tx sa ${an} pn 1 on key ${key.kidHex} ${key.keyHex}`, apply: (s) => withSa(s, an, { keyId: key.keyId, tx: true }) });
  }
  if (after.activeAn !== an) steps.push({ line: `link set ${port.device} type macsec encodingsa ${an}`, apply: (s) => ({ ...s, activeAn: an }) });
  if (after.down) steps.push({ line: `link set ${port.device} up`, apply: (s) => ({ ...s, down: false }) });
  return steps;
}

/** Retire: both SAs of a key out of service. Refuses the key in service (that would cut the port silently). */
export function planRetire(port: StaticPort, state: StaticState, keyId: string): Step[] {
  const an = findAn(state, keyId);
  if (an === null) return [];
  if (an === state.activeAn) throw new Error(`key ${keyId} is in service on AN ${an}: activate its successor before retiring it`);
  return removeSa(port, state, an);
}

/** Fail closed: the MACsec interface goes down; the next activate brings it up. */
export function planShutDown(port: StaticPort): Step[] {
  return [{ line: `link set ${port.device} down`, apply: (s) => ({ ...s, down: true }) }];
}

import { ConnectorConfigError } from '../connector.js';
import type { ViciMessage } from './vici-codec.js';

/**
 * The `connector` object of a strongswan binding, checked once when the agent starts:
 *
 *   { "type": "strongswan",
 *     "vici_socket": "/var/run/charon.vici",           // charon's plugins.vici.socket (default shown)
 *     "connection": "site-b",                          // the IKE connection's name in charon
 *     "definition": { "version": 2, "local_addrs": [...], "remote_addrs": [...], "proposals": [...],
 *                     "local": {...}, "remote": {...},
 *                     "children": { "net": { "local_ts": [...], "remote_ts": [...], "esp_proposals": [...] } } },
 *     "child": "net",                                  // the child SA the master initiates (default: the only one)
 *     "initiate_timeout_ms": 15000 }
 *
 * `definition` is the body of the connection as swanctl.conf writes it under `connections.<name>` (lists as JSON
 * arrays, sections as objects); the connector loads it over VICI with `ppk_id` and `ppk_required = yes` added, so
 * the definition itself must not set them. IKE authentication (PSK secrets, certificates) stays the operator's, in
 * swanctl.conf as usual.
 */
export interface StrongswanSettings {
  viciSocket: string;
  connection: string;
  definition: ViciMessage;
  child: string;
  initiateTimeoutMs: number;
}

const KNOWN = new Set(['type', 'vici_socket', 'connection', 'definition', 'child', 'initiate_timeout_ms']);

export function parseStrongswanSettings(s: Record<string, unknown>, field = 'connector'): StrongswanSettings {
  for (const key of Object.keys(s)) {
    if (!KNOWN.has(key)) throw new ConnectorConfigError(`${field}.${key}`, `unknown setting; known: ${[...KNOWN].join(', ')}`);
  }
  const viciSocket = s.vici_socket ?? '/var/run/charon.vici';
  if (typeof viciSocket !== 'string' || !viciSocket.startsWith('/')) {
    throw new ConnectorConfigError(`${field}.vici_socket`, 'must be the absolute path of charon\'s VICI socket');
  }
  const connection = s.connection;
  if (typeof connection !== 'string' || !/^[\w.-]{1,64}$/.test(connection)) {
    throw new ConnectorConfigError(`${field}.connection`, 'must name the IKE connection (letters, digits, . _ -)');
  }
  const definition = s.definition;
  if (!isSection(definition)) {
    throw new ConnectorConfigError(`${field}.definition`, 'must be the connection\'s body as in swanctl.conf, as a JSON object');
  }
  checkValues(definition, `${field}.definition`);
  for (const own of ['ppk_id', 'ppk_required']) {
    if (own in definition) throw new ConnectorConfigError(`${field}.definition.${own}`, 'is set by the connector from the QKD key; remove it');
  }
  const children = definition.children;
  if (!isSection(children) || Object.keys(children).length === 0) {
    throw new ConnectorConfigError(`${field}.definition.children`, 'must define the child SA(s) the tunnel carries');
  }
  const names = Object.keys(children);
  const child = s.child ?? (names.length === 1 ? names[0] : undefined);
  if (typeof child !== 'string' || !names.includes(child)) {
    throw new ConnectorConfigError(`${field}.child`, `must name one of definition.children (${names.join(', ')})`);
  }
  const initiateTimeoutMs = s.initiate_timeout_ms ?? 15_000;
  if (typeof initiateTimeoutMs !== 'number' || !Number.isInteger(initiateTimeoutMs) || initiateTimeoutMs < 1000) {
    throw new ConnectorConfigError(`${field}.initiate_timeout_ms`, 'must be an integer of at least 1000');
  }
  return { viciSocket, connection, definition, child, initiateTimeoutMs };
}

function isSection(v: unknown): v is ViciMessage {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Only what VICI can carry: text, numbers, booleans, lists of those, and sections of the same. */
function checkValues(section: ViciMessage, path: string): void {
  for (const [key, value] of Object.entries(section)) {
    const where = `${path}.${key}`;
    if (isSection(value)) checkValues(value, where);
    else if (Array.isArray(value)) {
      if (!value.every(isScalar)) throw new ConnectorConfigError(where, 'a list may hold only strings, numbers and booleans');
    } else if (!isScalar(value)) throw new ConnectorConfigError(where, 'must be a string, number, boolean, list or section');
  }
}

function isScalar(v: unknown): boolean {
  return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

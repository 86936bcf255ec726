import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { ConfigError } from '../config/load.js';
import type { SkipConfig, SkipRouterConfig } from './config.js';

/** A router as the SKIP listener knows it once its PSK is read. */
export interface SkipRouter {
  systemId: string;
  saeId: string;
  pskIdentity: string;
  /** Kept in memory only: handed to OpenSSL in the handshake, never logged or audited. */
  psk: Buffer;
}

/** Shortest PSK accepted: 128 bits, as for any symmetric key that guards key delivery. */
const MIN_PSK_BYTES = 16;

/**
 * The routers of the SKIP config, with their PSKs read from their files, and the system-ID ↔ SAE mapping.
 * Which router a connection belongs to is decided in the TLS handshake (the PSK identity whose key the peer proved
 * it holds) and remembered per socket, so a request can never claim another router's identity.
 */
export class SkipRouters {
  private readonly byIdentity = new Map<string, SkipRouter>();
  private readonly bySocket = new WeakMap<TLSSocket, SkipRouter>();
  /** remoteSystemID → SAE ID: this KME's routers and the configured routers behind other KMEs. */
  private readonly saeOfSystem = new Map<string, string>();

  constructor(config: SkipConfig) {
    config.routers.forEach((r, i) => {
      const router: SkipRouter = { systemId: r.system_id, saeId: r.sae_id, pskIdentity: r.psk_identity ?? r.system_id, psk: readPsk(r, `skip.routers[${i}]`) };
      if (this.byIdentity.has(router.pskIdentity)) throw new ConfigError(`skip.routers[${i}].psk_identity: ${router.pskIdentity} is used twice`);
      this.byIdentity.set(router.pskIdentity, router);
      this.addSystem(r.system_id, r.sae_id, `skip.routers[${i}].system_id`);
    });
    config.remote_systems.forEach((r, i) => this.addSystem(r.system_id, r.sae_id, `skip.remote_systems[${i}].system_id`));
  }

  private addSystem(systemId: string, saeId: string, field: string): void {
    if (this.saeOfSystem.has(systemId)) throw new ConfigError(`${field}: system ID ${systemId} is named twice`);
    this.saeOfSystem.set(systemId, saeId);
  }

  /** For `pskCallback`: the key of `identity`, remembering the router for the socket; null refuses the handshake. */
  pskFor(socket: TLSSocket, identity: string): Buffer | null {
    const router = this.byIdentity.get(identity);
    if (!router) return null;
    this.bySocket.set(socket, router);
    return router.psk;
  }

  /** The router that completed the handshake on this socket (a finished handshake always set it). */
  routerOf(socket: TLSSocket): SkipRouter | undefined {
    return this.bySocket.get(socket);
  }

  saeOf(systemId: string): string | undefined {
    return this.saeOfSystem.get(systemId);
  }

  /** Every system ID a router may name as remoteSystemID (all but its own). */
  remoteSystemsOf(router: SkipRouter): string[] {
    return [...this.saeOfSystem.keys()].filter((id) => id !== router.systemId).sort();
  }

  /** The SAE IDs this KME's routers stand for, to check against its registry at boot. */
  localSaeIds(): string[] {
    return [...new Set([...this.byIdentity.values()].map((r) => r.saeId))];
  }
}

function readPsk(r: SkipRouterConfig, field: string): Buffer {
  let text: string;
  try {
    text = readFileSync(r.psk_file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(`${field}.psk_file: cannot read ${r.psk_file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let psk: Buffer;
  if (r.psk_format === 'text') psk = Buffer.from(text, 'utf8');
  else {
    if (!/^([0-9a-fA-F]{2})+$/.test(text)) throw new ConfigError(`${field}.psk_file: ${r.psk_file} must hold the key as hex digits (psk_format hex)`);
    psk = Buffer.from(text, 'hex');
  }
  if (psk.length < MIN_PSK_BYTES) throw new ConfigError(`${field}.psk_file: the key in ${r.psk_file} has ${psk.length} bytes; at least ${MIN_PSK_BYTES} are required`);
  return psk;
}

import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { ConfigError } from '../config/load.js';
import type { SkipConfig, SkipRouterConfig } from './config.js';

/** A router as the SKIP listener knows it once its PSK is read. */
export interface SkipRouter {
  systemId: string;
  saeId: string;
  /** How it authenticates: a pre-shared key (kept in memory only, never logged or audited) or a client certificate. */
  credential: { psk: Buffer; identity: string } | { certificateCn: string };
}

/** What the custody log names as the router's credential (there may be no certificate to fingerprint). */
export function credentialOf(router: SkipRouter, socket: TLSSocket): string {
  if ('psk' in router.credential) return `skip-psk:${router.credential.identity}`;
  return socket.getPeerX509Certificate()?.fingerprint256 ?? `skip-cert:${router.credential.certificateCn}`;
}

/** Shortest PSK accepted: 128 bits, as for any symmetric key that guards key delivery. */
const MIN_PSK_BYTES = 16;

/**
 * The routers of the SKIP config, with their PSKs read from their files, and the system-ID ↔ SAE mapping.
 * Which router a connection belongs to is decided in the TLS handshake (the PSK identity whose key the peer proved
 * it holds) and remembered per socket, so a request can never claim another router's identity.
 */
export class SkipRouters {
  private readonly byIdentity = new Map<string, SkipRouter & { credential: { psk: Buffer; identity: string } }>();
  private readonly byCn = new Map<string, SkipRouter>();
  private readonly bySocket = new WeakMap<TLSSocket, SkipRouter>();
  /** remoteSystemID → SAE ID: this KME's routers and the configured routers behind other KMEs. */
  private readonly saeOfSystem = new Map<string, string>();

  constructor(config: SkipConfig) {
    config.routers.forEach((r, i) => {
      const field = `skip.routers[${i}]`;
      if ((r.psk_file === undefined) === (r.certificate_cn === undefined)) throw new ConfigError(`${field}: give either psk_file or certificate_cn`);
      if (r.certificate_cn !== undefined) {
        if (!config.tls) throw new ConfigError(`${field}.certificate_cn: routers with certificates need skip.tls (the server's certificate and the routers' CA)`);
        if (this.byCn.has(r.certificate_cn)) throw new ConfigError(`${field}.certificate_cn: ${r.certificate_cn} is used twice`);
        this.byCn.set(r.certificate_cn, { systemId: r.system_id, saeId: r.sae_id, credential: { certificateCn: r.certificate_cn } });
      } else {
        const identity = r.psk_identity ?? r.system_id;
        if (this.byIdentity.has(identity)) throw new ConfigError(`${field}.psk_identity: ${identity} is used twice`);
        this.byIdentity.set(identity, { systemId: r.system_id, saeId: r.sae_id, credential: { identity, psk: readPsk(r.psk_file!, r.psk_format, field) } });
      }
      this.addSystem(r.system_id, r.sae_id, `${field}.system_id`);
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
    return router.credential.psk;
  }

  /** The router that completed the handshake on this socket: by its PSK, else by a certificate of the routers' CA. */
  routerOf(socket: TLSSocket): SkipRouter | undefined {
    const byPsk = this.bySocket.get(socket);
    if (byPsk) return byPsk;
    if (!socket.authorized) return undefined;
    const cn = socket.getPeerCertificate()?.subject?.CN;
    return typeof cn === 'string' ? this.byCn.get(cn) : undefined;
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
    return [...new Set([...this.byIdentity.values(), ...this.byCn.values()].map((r) => r.saeId))];
  }
}

function readPsk(path: string, format: SkipRouterConfig['psk_format'], field: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new ConfigError(`${field}.psk_file: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let psk: Buffer;
  if (format === 'text') psk = Buffer.from(text, 'utf8');
  else {
    if (!/^([0-9a-fA-F]{2})+$/.test(text)) throw new ConfigError(`${field}.psk_file: ${path} must hold the key as hex digits (psk_format hex)`);
    psk = Buffer.from(text, 'hex');
  }
  if (psk.length < MIN_PSK_BYTES) throw new ConfigError(`${field}.psk_file: the key in ${path} has ${psk.length} bytes; at least ${MIN_PSK_BYTES} are required`);
  return psk;
}

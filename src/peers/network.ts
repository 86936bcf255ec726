import type { PoolGate } from '../pool/pool-gate.js';
import type { PolicyBook } from '../policy/policy-book.js';
import type { Principals } from '../auth/principals.js';
import type { Barrier } from '../barrier/barrier.js';
import type { Witness } from '../audit/witness.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { Announcer } from './announcer.js';
import { PeerRoom } from '../pool/ownership.js';
import { SecondaryIngest } from '../pool/secondary-ingest.js';
import type { LinkFigures } from '../pool/link-figures.js';
import type { LinkSource } from '../sources/link-source.js';
import type { Db } from '../store/db.js';
import { Forwarder } from './forwarder.js';
import { InFlight } from './in-flight.js';
import { LinkSync } from './link-sync.js';
import { PeerClient } from './peer-client.js';
import { PeerService } from './peer-service.js';
import { ExtKeysReceiver } from './receiver.js';
import { PeerKemKeys } from './peer-kem-keys.js';
import { OwnKemKey } from './pqc-envelope.js';
import type { Topology } from './topology.js';

/** The KME-to-KME side of one KME, wired: clients, relay, link upkeep, announcements, and the service peers call. */
export interface Network {
  forwarder: Forwarder;
  /** A client per direct peer KME, by KME ID. */
  clients: Map<string, PeerClient>;
  linkSync: LinkSync;
  peerService: PeerService;
  peerRooms: Map<string, PeerRoom>;
  announcers: Map<string, Announcer>;
  /** The peers' public KEM keys, for fallback keys sent to them. */
  peerKemKeys: PeerKemKeys;
  start(): void;
  close(): Promise<void>;
}

/** Ownership watermarks only touch copies older than this (see LinkSync). */
const GC_AGE_MS = 10 * 60_000;

export function buildNetwork(deps: {
  config: Config;
  /** The registry of principals: the status and allowed peers of this KME's SAEs, for reservations made for them. */
  principals?: Principals;
  /** Operators' holds on pools and policies per SAE pair, for reservations and relays. */
  pools?: PoolGate;
  policies?: PolicyBook;
  topology: Topology;
  db: Db;
  barrier: Barrier;
  sources: Map<string, LinkSource>;
  figures: Map<string, LinkFigures>;
  tls: { ca: Buffer; cert: Buffer; key: Buffer; ecdhCurve?: string };
  witness: Witness;
  log: Logger;
}): Network {
  const { config, topology, db, barrier, log } = deps;
  const clients = new Map(
    topology.peerList.map((p) => [p.kme_id, new PeerClient(p, deps.tls, config.network.peer_timeout_ms)] as const),
  );
  const inFlight = new InFlight();
  const forwarder = new Forwarder({ kmeId: config.kme_id, clients, inFlight, peerTimeoutMs: config.network.peer_timeout_ms, log });
  const peerRooms = new Map<string, PeerRoom>();
  const secondaries = new Map<string, SecondaryIngest>();
  const announcers = new Map<string, Announcer>();
  for (const link of topology.links) {
    if (link.role === 'primary') {
      const room = new PeerRoom();
      peerRooms.set(link.linkId, room);
      announcers.set(
        link.linkId,
        new Announcer({ db, client: clients.get(link.peerKmeId!)!, kmeId: config.kme_id, linkId: link.linkId, peerRoom: room, log }),
      );
    }
    if (link.role === 'secondary') {
      secondaries.set(
        link.linkId,
        new SecondaryIngest({
          db,
          barrier,
          source: deps.sources.get(link.linkId)!,
          kmeId: config.kme_id,
          peerKmeId: link.peerKmeId!,
          linkId: link.linkId,
          blockBits: link.blockBits,
          maxBlocks: config.keys.max_key_count,
          log,
          onStored: (blocks) => deps.figures.get(link.linkId)?.record(blocks),
        }),
      );
    }
  }
  const linkSync = new LinkSync({
    db,
    topology,
    clients,
    inFlight,
    peerRooms,
    maxBlocks: config.keys.max_key_count,
    intervalMs: config.network.sync_interval_ms,
    gcAgeMs: GC_AGE_MS,
    log,
  });
  const kem = new OwnKemKey();
  const receiver = new ExtKeysReceiver({
    db,
    barrier,
    topology,
    forwarder,
    kem,
    maxKeyTtlMs: config.keys.key_ttl_seconds * 1000,
    log,
    ...(deps.principals ? { principals: deps.principals } : {}),
    ...(deps.pools ? { pools: deps.pools } : {}),
    ...(deps.policies ? { policies: deps.policies } : {}),
  });
  const peerService = new PeerService({ db, topology, receiver, forwarder, secondaries, linkSync, witness: deps.witness, kem, log });
  return {
    forwarder,
    clients,
    linkSync,
    peerService,
    peerRooms,
    announcers,
    peerKemKeys: new PeerKemKeys(clients),
    start() {
      linkSync.start();
      for (const a of announcers.values()) a.start();
    },
    async close() {
      await linkSync.stop();
      await Promise.all([...announcers.values()].map((a) => a.stop()));
      for (const c of clients.values()) c.close();
    },
  };
}

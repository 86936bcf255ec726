import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { ConfigError } from '../config/load.js';
import { EtsiMessage, KmsError, badRequest, unauthorized, unavailable } from '../errors.js';
import { registerJsonBodyParser } from '../http/json-body.js';
import type { Logger } from '../log.js';
import type { SimConfig } from './config.js';
import { DevicePair, otherEnd, type End } from './device-pair.js';
import { postQuantumTls } from '../tls.js';

export interface DeviceSimulator {
  /** https://host:port the devices listen on. */
  url: string;
  /** Takes a link down now for `ms` (every key call answers 503, no key distils). */
  outage(linkId: string, ms: number): void;
  close(): Promise<void>;
}

/** Where a call lands: the pair, the caller's end, and the end named in the path. */
interface Route {
  pair: DevicePair;
  caller: End;
  other: End;
}

/**
 * Serves the DEVICE side of ETSI GS QKD 014 for every simulated link, so KMEs use their real `etsi014` driver
 * against a real HTTP peer. A client is the end whose `certificate_cn` (default: its SAE ID) is the CN of its
 * verified certificate. Every error is an ETSI Error body; keys never reach a log.
 */
export async function startDeviceSimulator(config: SimConfig, log: Logger): Promise<DeviceSimulator> {
  const pairs = new Map(config.links.map((l) => [l.link_id, new DevicePair(l)]));
  const bySae = new Map<string, { pair: DevicePair; end: End }>();
  for (const pair of pairs.values()) pair.link.ends.forEach((e, i) => bySae.set(e.sae_id, { pair, end: i as End }));
  const cnOf = (pair: DevicePair, end: End) => pair.link.ends[end]!.certificate_cn ?? pair.link.ends[end]!.sae_id;

  const app = Fastify({
    https: { ...readTls(config.tls), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2', ...postQuantumTls },
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true },
  }) as unknown as FastifyInstance;
  registerJsonBodyParser(app);
  installErrors(app, log);

  /** The caller must be the end opposite `sae` (the SAE ID in the path), on the link `sae` belongs to. */
  const route = (request: FastifyRequest, sae: string): Route => {
    const cn = clientCn(request);
    const target = bySae.get(sae);
    if (!target) throw badRequest(`SAE ID ${sae} is not an end of any simulated link`);
    const caller = otherEnd(target.end);
    if (cn !== cnOf(target.pair, caller)) {
      throw unauthorized(`certificate CN=${cn} is not the device client at the other end of ${sae} (link ${target.pair.link.link_id})`);
    }
    if (target.pair.isDown()) throw unavailable(`QKD link ${target.pair.link.link_id} is down (outage), try again later`);
    return { pair: target.pair, caller, other: target.end };
  };

  type Params = { Params: { sae: string } };
  app.get<Params>('/api/v1/keys/:sae/status', async (request) => {
    const { pair, caller, other } = route(request, request.params.sae);
    const l = pair.link;
    return {
      source_KME_ID: `${l.link_id}:${l.ends[caller]!.sae_id}`,
      target_KME_ID: `${l.link_id}:${l.ends[other]!.sae_id}`,
      master_SAE_ID: l.ends[caller]!.sae_id,
      slave_SAE_ID: l.ends[other]!.sae_id,
      key_size: l.key_size,
      stored_key_count: pair.stored(),
      max_key_count: l.max_key_count,
      max_key_per_request: l.max_key_per_request,
      max_key_size: l.key_size,
      min_key_size: l.key_size,
      max_SAE_ID_count: 0,
      status_extension: { qkms_simulator: true, qkms_link_id: l.link_id, qkms_qber: l.qber },
    };
  });

  const encKeys = async (request: FastifyRequest<Params>) => {
    const { pair, caller } = route(request, request.params.sae);
    const { number } = encRequest(request, pair.link);
    const keys = pair.take(caller, number);
    if (!keys) throw unavailable(`not enough key material on the device for ${number} key(s) (${pair.stored()} stored), try again later`);
    return keyContainer(keys);
  };
  app.get<Params>('/api/v1/keys/:sae/enc_keys', encKeys);
  app.post<Params>('/api/v1/keys/:sae/enc_keys', encKeys);

  const decKeys = async (request: FastifyRequest<Params>) => {
    // The path names the end that took the keys with enc_keys; the caller is the other end.
    const { pair, other } = route(request, request.params.sae);
    const ids = decRequest(request, pair.link.max_key_per_request);
    const keys = pair.collect(other, ids);
    if (!keys) throw badRequest(EtsiMessage.keysNotFound);
    return keyContainer(ids.map((key_ID, i) => ({ key_ID: key_ID.toLowerCase(), key: keys[i]! })));
  };
  app.get<Params>('/api/v1/keys/:sae/dec_keys', decKeys);
  app.post<Params>('/api/v1/keys/:sae/dec_keys', decKeys);

  app.post<{ Params: { link: string } }>('/sim/v1/links/:link/outage', async (request) => {
    const pair = pairs.get(request.params.link);
    if (!pair) throw badRequest(`no simulated link ${request.params.link}`);
    const cn = clientCn(request);
    if (cn !== cnOf(pair, 0) && cn !== cnOf(pair, 1)) {
      throw unauthorized(`certificate CN=${cn} is not an end of link ${pair.link.link_id}`);
    }
    const seconds = (request.body as { seconds?: unknown } | undefined)?.seconds;
    if (typeof seconds !== 'number' || !(seconds > 0 && seconds <= 86_400)) {
      throw badRequest('seconds must be a number of seconds in (0, 86400]');
    }
    pair.outage(seconds * 1000);
    log.warn({ link: pair.link.link_id, seconds, by: cn }, 'simulated link outage triggered');
    return { link_id: pair.link.link_id, down_for_seconds: seconds };
  });

  await app.listen({ host: config.listen.host, port: config.listen.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.listen.port;
  const host = ['0.0.0.0', '::'].includes(config.listen.host) ? 'localhost' : config.listen.host;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info({ url, links: config.links.map((l) => l.link_id) }, 'QKD device simulator listening (random keys, not a quantum source)');

  return {
    url,
    outage(linkId, ms) {
      const pair = pairs.get(linkId);
      if (!pair) throw new Error(`no simulated link ${linkId}`);
      pair.outage(ms);
    },
    async close() {
      await app.close();
      for (const pair of pairs.values()) pair.close();
    },
  };
}

function readTls(tls: SimConfig['tls']) {
  const read = (field: 'cert' | 'key' | 'ca') => {
    try {
      return readFileSync(tls[field]);
    } catch (err) {
      throw new ConfigError(`/tls/${field}: cannot read ${tls[field]}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  return { cert: read('cert'), key: read('key'), ca: read('ca') };
}

/** The CN of the caller's verified certificate, or a 401 saying why there is none. */
function clientCn(request: FastifyRequest): string {
  const socket = request.raw.socket as TLSSocket;
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) throw unauthorized('no client certificate: mutual TLS is required');
  if (!socket.authorized) throw unauthorized(`client certificate rejected: ${String(socket.authorizationError)}`);
  const cn = Array.isArray(cert.subject?.CN) ? cert.subject.CN[0] : cert.subject?.CN;
  if (!cn) throw unauthorized('client certificate has no subject CN');
  return cn;
}

/** enc_keys parameters (query for GET, JSON body for POST). The simulator serves exactly key_size bits. */
function encRequest(request: FastifyRequest, link: SimConfig['links'][number]): { number: number; size: number } {
  const q = request.method === 'GET' ? (request.query as Record<string, unknown>) : {};
  const b = request.method === 'POST' ? ((request.body ?? {}) as Record<string, unknown>) : {};
  for (const name of Object.keys(q)) {
    if (name !== 'number' && name !== 'size') throw badRequest(`query parameter ${name} is not supported here`);
  }
  if (Array.isArray(b.additional_slave_SAE_IDs) && b.additional_slave_SAE_IDs.length > 0) {
    throw badRequest('additional_slave_SAE_IDs: a device pair has no multicast (max_SAE_ID_count is 0)');
  }
  if (Array.isArray(b.extension_mandatory) && b.extension_mandatory.length > 0) {
    throw badRequest(EtsiMessage.extensionMandatoryUnsupported);
  }
  const number = integer('number', request.method === 'GET' ? q.number : b.number, 1);
  const size = integer('size', request.method === 'GET' ? q.size : b.size, link.key_size);
  if (number < 1 || number > link.max_key_per_request) throw badRequest(`number must be between 1 and ${link.max_key_per_request}`);
  if (size !== link.key_size) {
    throw badRequest(`size must equal this device's key_size (${link.key_size} bits) in this simulator; asked for ${size}`);
  }
  return { number, size };
}

/** dec_keys key_IDs: `?key_ID=` for GET, `{key_IDs: [{key_ID}]}` for POST. */
function decRequest(request: FastifyRequest, max: number): string[] {
  if (request.method === 'GET') {
    const q = request.query as Record<string, unknown>;
    for (const name of Object.keys(q)) {
      if (name !== 'key_ID') throw badRequest(`query parameter ${name} is not supported here: use POST for several key_IDs`);
    }
    if (typeof q.key_ID !== 'string' || q.key_ID === '') throw badRequest('query parameter key_ID is required');
    return [q.key_ID];
  }
  const list = ((request.body ?? {}) as { key_IDs?: unknown }).key_IDs;
  if (!Array.isArray(list) || list.length === 0) throw badRequest('key_IDs must be a non-empty array of {key_ID}');
  if (list.length > max) throw badRequest(`at most ${max} key_IDs per request`);
  return list.map((item, i) => {
    const id = (item as { key_ID?: unknown } | null)?.key_ID;
    if (typeof id !== 'string' || id === '') throw badRequest(`key_IDs[${i}].key_ID must be a string`);
    return id;
  });
}

function integer(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  const n = typeof value === 'string' && /^\d{1,9}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw badRequest(`${name} must be an integer`);
  return n;
}

/** The ETSI key container; the buffers are wiped once encoded (the JSON text is Fastify's to send). */
function keyContainer(keys: Array<{ key_ID: string; key: Buffer }>) {
  const out = keys.map(({ key_ID, key }) => ({ key_ID, key: key.toString('base64') }));
  for (const { key } of keys) key.fill(0);
  return { keys: out };
}

/** Every error, the framework's included, leaves as an ETSI Error body; internals stay in the log. */
function installErrors(app: FastifyInstance, log: Logger): void {
  const send = (reply: { code(n: number): { type(t: string): { send(b: unknown): unknown } } }, err: KmsError) =>
    reply.code(err.statusCode).type('application/json; charset=utf-8').send(err.toBody());
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof KmsError) {
      const path = request.url.split('?')[0];
      if (err.statusCode !== 503) log.info({ status: err.statusCode, path, reason: err.message }, 'device call refused');
      return send(reply, err);
    }
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) return send(reply, badRequest(err.message.replace(/^FST_\w+: /, '')));
    log.error({ err: { message: err.message } }, 'device simulator internal error');
    return send(reply, unavailable(`internal error (request ${request.id}), try again later`));
  });
  app.setNotFoundHandler((request, reply) =>
    send(reply, new KmsError(404, `no such endpoint: ${request.method} ${request.url.split('?')[0]}`)),
  );
}

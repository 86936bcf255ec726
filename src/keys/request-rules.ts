import type { KeyLimits } from '../config/schema.js';
import { badRequest, EtsiMessage } from '../errors.js';
import type { KeyRequest } from './types.js';

/**
 * The semantic rules of a Get key request (ETSI 014 §6.2), on top of the JSON types the HTTP schema checked.
 * Each failure is a 400 whose message names the field and the limit, in the standard's words where it has them.
 */

/**
 * Extensions this KME implements; this project's vendor prefix is `qkms_` (§6.2: a prefix ending in `_`).
 * - `qkms_route_type`: `direct` (every slave's KME shares a link with this one) or `indirect` (trusted-node relay
 *   allowed). Honoured as mandatory; as an optional extension it is ignored (the KME routes as it must anyway).
 */
const SUPPORTED_EXTENSIONS = new Set<string>(['qkms_route_type']);
const ROUTE_TYPES = new Set(['direct', 'indirect']);

export interface CheckedKeyRequest {
  number: number;
  size: number;
  additionalSlaves: string[];
}

export function checkKeyRequest(
  req: KeyRequest,
  ctx: { limits: KeyLimits; master: string; slave: string; isRegistered: (saeId: string) => boolean },
): CheckedKeyRequest {
  const { limits } = ctx;
  const number = req.number ?? 1;
  if (number < 1 || number > limits.max_key_per_request) {
    throw badRequest(`number must be between 1 and ${limits.max_key_per_request} (max_key_per_request)`);
  }
  const size = req.size ?? limits.key_size;
  checkSize(size, limits);
  return { number, size, additionalSlaves: checkAdditionalSlaves(req.additional_slave_SAE_IDs ?? [], ctx) };
}

function checkSize(size: number, limits: KeyLimits): void {
  const range = `size is in bits and must be between ${limits.min_key_size} (min_key_size) and ${limits.max_key_size} (max_key_size)`;
  if (size <= 0) throw badRequest(range);
  if (size % 8 !== 0) throw badRequest(EtsiMessage.sizeNotMultipleOf8);
  if (size < limits.min_key_size || size > limits.max_key_size) throw badRequest(range);
}

function checkAdditionalSlaves(
  ids: string[],
  ctx: { limits: KeyLimits; master: string; slave: string; isRegistered: (saeId: string) => boolean },
): string[] {
  if (ids.length > ctx.limits.max_SAE_ID_count) {
    throw badRequest(
      `additional_slave_SAE_IDs may name at most ${ctx.limits.max_SAE_ID_count} SAEs (max_SAE_ID_count)`,
    );
  }
  const seen = new Set<string>();
  for (const id of ids) {
    if (id.trim() === '') throw badRequest('additional_slave_SAE_IDs must not contain an empty SAE ID');
    if (id === ctx.master) throw badRequest(`additional_slave_SAE_IDs must not name the master SAE ${id}`);
    if (id === ctx.slave) throw badRequest(`additional_slave_SAE_IDs must not repeat the slave SAE ${id} of the path`);
    if (seen.has(id)) throw badRequest(`additional_slave_SAE_IDs names ${id} twice`);
    if (!ctx.isRegistered(id)) throw badRequest(`additional slave SAE ${id} is not registered at this KME or in its network`);
    seen.add(id);
  }
  return ids;
}

/**
 * §6.2: every mandatory extension must be supported, or the request fails as a whole. Returns what the supported
 * ones ask for (a route type the caller insists on).
 */
export function checkExtensions(req: KeyRequest): { routeType?: 'direct' | 'indirect' } {
  const unsupported: Array<Record<string, string>> = [];
  let routeType: 'direct' | 'indirect' | undefined;
  for (const item of req.extension_mandatory ?? []) {
    for (const [name, value] of Object.entries(item)) {
      if (!SUPPORTED_EXTENSIONS.has(name)) {
        unsupported.push({ extension_mandatory_unsupported: `${name} is not supported` });
        continue;
      }
      if (typeof value !== 'string' || !ROUTE_TYPES.has(value)) {
        throw badRequest(EtsiMessage.extensionMandatoryUnmet, [{ qkms_route_type: 'must be "direct" or "indirect"' }]);
      }
      routeType = value as 'direct' | 'indirect';
    }
  }
  if (unsupported.length > 0) throw badRequest(EtsiMessage.extensionMandatoryUnsupported, unsupported);
  return routeType ? { routeType } : {};
}

/** Canonical lowercase UUID, the only key_ID form this KME issues (IPsec plug-ins uuid_parse it). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Checks and normalises the key_IDs of a Get key with key IDs request. */
export function checkKeyIds(ids: string[], limits: KeyLimits): string[] {
  if (ids.length === 0) throw badRequest('key_IDs must name at least one key_ID');
  if (ids.length > limits.max_key_per_request) {
    throw badRequest(`key_IDs may name at most ${limits.max_key_per_request} keys (max_key_per_request)`);
  }
  const normalised = ids.map((id) => id.toLowerCase());
  const seen = new Set<string>();
  for (const [i, id] of normalised.entries()) {
    if (!UUID.test(id)) throw badRequest(`key_ID ${JSON.stringify(ids[i])} is not a UUID`);
    if (seen.has(id)) throw badRequest(`key_ID ${id} is named twice`);
    seen.add(id);
  }
  return normalised;
}

import { HttpJsonError, JsonClient } from '../../http/json-client.js';
import type { ConsumerKey } from '../connector.js';
import type { BindingConfig } from './config.js';

/** ETSI 014's answer when a key_ID is unknown, or was already fetched (a key is delivered once). */
const NOT_FOUND = 'one or more keys specified are not found on KME';

interface KeyContainer {
  keys: Array<{ key_ID: string; key: string }>;
}

/**
 * This side's SAE towards its own KME (ETSI GS QKD 014), with the SAE's client certificate. Errors carry the KME's
 * Error message and status, never a key.
 */
export class KmeClient {
  private readonly http: JsonClient;
  private readonly base: string;

  constructor(binding: BindingConfig, field: string) {
    this.http = new JsonClient(
      { ca: binding.kme.ca, cert: binding.sae.cert, key: binding.sae.key },
      { ca: `${field}/kme/ca`, cert: `${field}/sae/cert`, key: `${field}/sae/key` },
      { timeoutMs: 15_000 },
    );
    this.base = binding.kme.url.replace(/\/+$/, '');
  }

  /** Get key (the master): one new key of `sizeBits` shared with `slaveSaeId`. */
  async encKey(slaveSaeId: string, sizeBits: number): Promise<ConsumerKey> {
    const url = `${this.base}/api/v1/keys/${encodeURIComponent(slaveSaeId)}/enc_keys`;
    const body = await this.http.call<KeyContainer>('POST', url, { number: 1, size: sizeBits });
    return only(body);
  }

  /**
   * Get key with key IDs (the slave): the key `keyId` that `masterSaeId` asked for. 'gone' when the KME does not
   * have it (never reserved, expired, or fetched already — after which no one can fetch it again).
   */
  async decKey(masterSaeId: string, keyId: string): Promise<ConsumerKey | 'gone'> {
    const url = `${this.base}/api/v1/keys/${encodeURIComponent(masterSaeId)}/dec_keys`;
    try {
      return only(await this.http.call<KeyContainer>('POST', url, { key_IDs: [{ key_ID: keyId }] }));
    } catch (err) {
      if (err instanceof HttpJsonError && err.status === 400 && err.message === NOT_FOUND) return 'gone';
      throw err;
    }
  }

  close(): void {
    this.http.close();
  }
}

function only(body: KeyContainer): ConsumerKey {
  const k = body?.keys?.[0];
  if (!k || typeof k.key_ID !== 'string' || typeof k.key !== 'string' || body.keys.length !== 1) {
    throw new Error('the KME answered without exactly one key');
  }
  return { keyId: k.key_ID, key: Buffer.from(k.key, 'base64') };
}

/**
 * The one error catalogue. Every failure a client can see is a KmsError with an ETSI 014 status (400, 401, 503;
 * 404/405 only for unknown routes; the admin API also answers 404 for an unknown SAE and 409 for a change its state
 * does not allow) and an ETSI Error body `{message, details?}`. Anything else that escapes is an internal fault: the
 * HTTP layer turns it into a 503 whose body names only the request id (never internals).
 */
export type EtsiStatus = 400 | 401 | 404 | 405 | 409 | 503;

export type ErrorDetail = Record<string, unknown>;

export class KmsError extends Error {
  override name = 'KmsError';
  constructor(
    readonly statusCode: EtsiStatus,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super(message);
  }

  /** The ETSI 014 Error object (Table 13). */
  toBody(): { message: string; details?: ErrorDetail[] } {
    return this.details?.length ? { message: this.message, details: this.details } : { message: this.message };
  }
}

export const badRequest = (message: string, details?: ErrorDetail[]) => new KmsError(400, message, details);
export const unauthorized = (message: string, details?: ErrorDetail[]) => new KmsError(401, message, details);
export const unavailable = (message: string, details?: ErrorDetail[]) => new KmsError(503, message, details);
/** Admin API only: the thing named does not exist. */
export const notFound = (message: string) => new KmsError(404, message);
/** Admin API only: the change is not allowed from the present state (revoked already, ID taken, …). */
export const conflict = (message: string) => new KmsError(409, message);

/** Messages the standard mandates word for word (ETSI GS QKD 014 §6.2, §6.4). Clients match on them. */
export const EtsiMessage = {
  sizeNotMultipleOf8: 'size shall be a multiple of 8',
  extensionMandatoryUnsupported: 'not all extension_mandatory parameters are supported',
  extensionMandatoryUnmet: 'not all extension_mandatory request options could be met',
  keysNotFound: 'one or more keys specified are not found on KME',
} as const;

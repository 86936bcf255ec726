import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { KmsError, unavailable } from '../errors.js';
import { HsmUnavailableError, IntegrityError } from '../hsm/key-wrapper.js';
import { describeValidationError } from './validation.js';

/**
 * Every error leaves as an ETSI Error body with 400, 401 or 503 (404/405 for unknown routes). Framework errors
 * (bad JSON, wrong content type, validation) become 400s; anything unexpected becomes a 503 that names only the
 * request id, while the log keeps the details (never key material: errors never carry it).
 *
 * `onError` is told about every error answer (4xx refusals and 503 failures) so that they are audited.
 */
export function installErrorHandling(
  app: FastifyInstance,
  onError: (request: FastifyRequest, error: KmsError) => void,
): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const error = toKmsError(err, request);
    onError(request, error);
    return send(reply, error);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    let error: KmsError;
    if (/^\/api\/v1\/keys\/[^/]+\/(status|enc_keys|dec_keys)$/.test(path)) {
      const allowed = path.endsWith('/status') ? ['GET'] : ['GET', 'POST'];
      void reply.header('allow', allowed.join(', '));
      error = new KmsError(405, `method ${request.method} is not allowed on ${path}: use ${allowed.join(' or ')}`);
    } else {
      error = new KmsError(404, `no such endpoint: ${request.method} ${path}`);
    }
    onError(request, error);
    return send(reply, error);
  });
}

function send(reply: FastifyReply, error: KmsError) {
  return reply.code(error.statusCode).type('application/json; charset=utf-8').send(error.toBody());
}

function toKmsError(err: FastifyError, request: FastifyRequest): KmsError {
  if (err instanceof KmsError) return err;
  if (err.validation) {
    return new KmsError(400, describeValidationError(err.validationContext ?? 'body', err.validation));
  }
  if (err instanceof HsmUnavailableError) {
    request.log.warn({ err: { message: err.message } }, 'HSM unavailable');
    return unavailable('HSM unavailable, try again later');
  }
  if (err instanceof IntegrityError) {
    request.log.error({ err: { message: err.message } }, 'stored key material failed its integrity check');
    return unavailable(`stored key material failed its integrity check (request ${request.id}); the operator must investigate`);
  }
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    // Framework-level client errors (body too large, malformed URL, …): keep the message, normalise the status.
    return new KmsError(400, err.message.replace(/^FST_\w+: /, ''));
  }
  request.log.error({ err }, 'internal error');
  return unavailable(`internal error (request ${request.id}); try again later`);
}

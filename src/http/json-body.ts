import type { FastifyInstance } from 'fastify';
import { badRequest } from '../errors.js';

/**
 * Body parsing for the ETSI endpoints. Real clients send an empty POST (expecting one key of the default size),
 * and GETs with `Content-Type: application/json` and no body; both must work. A body that is present must be
 * JSON and say so; anything else is a 400 with an ETSI Error body, never a 415 or a framework shape.
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) => {
    const text = (body as string).trim();
    if (text === '') return done(null, {});
    const type = String(request.headers['content-type'] ?? '');
    if (type && !/^application\/([a-z0-9.+-]*\+)?json\b/i.test(type)) {
      return done(badRequest(`Content-Type ${type.split(';')[0]} is not supported: send application/json`));
    }
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(badRequest(`request body is not valid JSON: ${(err as Error).message}`));
    }
  });
  // A POST with no body and no Content-Type never reaches a parser; it means "all defaults" too.
  app.addHook('preValidation', async (request) => {
    if (request.method === 'POST' && request.body === undefined) request.body = {};
  });
}

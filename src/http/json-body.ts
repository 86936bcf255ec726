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
      done(notJson(err));
    }
  });
  // A POST with no body and no Content-Type never reaches a parser; it means "all defaults" too.
  app.addHook('preValidation', async (request) => {
    if (request.method === 'POST' && request.body === undefined) request.body = {};
  });
}

/**
 * V8's JSON.parse message quotes the input around the fault (`Unexpected token 'x', "…" is not valid JSON`), and
 * refusal reasons go to the client, the log and the audit log: a body may carry anything, even key material a
 * confused client pasted. So only the position V8 reports (when it reports one) leaves, never the text.
 */
function notJson(err: unknown) {
  const position = /\bat position (\d+)\b/.exec(err instanceof Error ? err.message : '')?.[1];
  return badRequest('request body is not valid JSON', position === undefined ? undefined : [{ position: Number(position) }]);
}

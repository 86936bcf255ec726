import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

// ajv-formats is CommonJS; under NodeNext its default export arrives wrapped.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: Ajv) => Ajv;

/**
 * Two validators, because the two parts of a request deserve different strictness:
 * - JSON bodies are checked as sent: `"size": "256"` or `"number": 1.5` is a 400, never silently coerced.
 * - query strings and path parameters are text by nature: `?number=3` is coerced to an integer; `?number=1.5`,
 *   `?size=abc` and repeated parameters still fail.
 * Neither removes unknown properties: a query parameter the schema does not allow is a 400 naming it, never
 * dropped (a multicast request sent as GET must not silently become a unicast one).
 */
export function validatorCompiler(): FastifySchemaCompiler<unknown> {
  const common = { removeAdditional: false, useDefaults: false, strict: false } as const;
  const body = addFormats(new Ajv({ ...common, allErrors: false, coerceTypes: false }));
  // All errors for query strings, so that an unsupported parameter is reported before a missing one.
  const text = addFormats(new Ajv({ ...common, allErrors: true, coerceTypes: true }));
  return ({ schema, httpPart }) =>
    (httpPart === 'body' ? body : text).compile(schema as object) as ReturnType<FastifySchemaCompiler<unknown>>;
}

/** Words a schema failure the way an ETSI client author reads it: the field, then what is wrong with it. */
export function describeValidationError(
  context: string,
  errors: ReadonlyArray<{ instancePath: string; keyword: string; message?: string; params: Record<string, unknown> }>,
): string {
  const e = errors.find((x) => x.keyword === 'additionalProperties') ?? errors[0];
  if (!e) return 'invalid request';
  const field = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (e.keyword === 'additionalProperties' && context === 'querystring') {
    const name = String(e.params.additionalProperty);
    return `query parameter ${name} is not supported here: GET takes only the standard query parameters; use POST with a JSON body`;
  }
  if (e.keyword === 'required') {
    const missing = String(e.params.missingProperty);
    return context === 'querystring' ? `query parameter ${missing} is required` : `${missing} is required`;
  }
  if (context === 'params' && e.keyword === 'minLength') return `the ${field} in the path is empty`;
  const what = field || (context === 'body' ? 'request body' : context);
  if (e.keyword === 'type') return `${what} must be ${article(String(e.params.type))}`;
  // ajv's "must be equal to one of the allowed values" does not say which.
  if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues)) return `${what} must be one of ${e.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  return `${what} ${e.message ?? 'is invalid'}`;
}

const article = (type: string) => (/^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`);

/** Material a transaction expected was taken, destroyed or never there: the request fails, nothing changes. */
export class MaterialGoneError extends Error {
  override name = 'MaterialGoneError';
}

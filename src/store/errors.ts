/** Material a transaction expected was taken, destroyed or never there: the request fails, nothing changes. */
export class MaterialGoneError extends Error {
  override name = 'MaterialGoneError';
}

/** A statement that checks a deadline found it passed: it changed nothing. */
export class DeadlinePassedError extends Error {
  override name = 'DeadlinePassedError';
}

/**
 * The KME's own SQLSTATEs, raised by `qkms_refuse` (migrations/0014_self_refusing_statements.sql) at the end of a
 * statement that checks its own result: the statement, and any transaction around it, changes nothing.
 */
export const REFUSED = {
  /** What the statement expected is not there (MaterialGoneError). */
  materialGone: 'QK001',
  /** The caller's deadline passed before the statement ended (DeadlinePassedError). */
  pastDeadline: 'QK002',
  /** The caller asked for something inconsistent: a defect, never a race (a plain Error). */
  defect: 'QK003',
} as const;

/** Runs a self-checking statement, its refusals turned into the errors above. */
export async function refusing<T>(statement: Promise<T>): Promise<T> {
  try {
    return await statement;
  } catch (err) {
    const { code, message } = err as { code?: string; message: string };
    if (code === REFUSED.materialGone) throw new MaterialGoneError(message);
    if (code === REFUSED.pastDeadline) throw new DeadlinePassedError(message);
    if (code === REFUSED.defect) throw new Error(message);
    throw err;
  }
}

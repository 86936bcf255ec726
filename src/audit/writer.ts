import type { Db, DbClient } from '../store/db.js';
import { auditBody, insertAuditSql, type AuditEvent } from './event.js';

/** Writes events on their own, for refusals and jobs whose state change is not in the same statement. */
export async function writeAuditEvents(db: Db | DbClient, events: AuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(insertAuditSql(1), [events.map(auditBody)]);
}

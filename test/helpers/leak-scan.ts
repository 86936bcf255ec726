import pg from 'pg';
import { windows } from './etsi.js';

/**
 * Looks for key material in what storage and logs hold: raw bytes, hex (either case, any nibble alignment) and
 * base64 (standard or URL-safe, any alignment), whole keys and every 16-byte run of each key.
 */
export const WINDOW = 16;

export interface Haystack {
  /** Where each piece came from, for the failure message. */
  texts: Array<{ where: string; text: string }>;
  bytes: Array<{ where: string; bytes: Buffer }>;
}

export interface Leak {
  key: number; // index into the keys searched for
  where: string;
  how: string;
}

export function findLeaks(keys: Buffer[], hay: Haystack): Leak[] {
  const leaks: Leak[] = [];
  const byWindow = new Map<string, number>();
  keys.forEach((key, i) => windows(key, WINDOW).forEach((w) => byWindow.set(w, i)));

  const scanBytes = (where: string, how: string, bytes: Buffer) => {
    for (let i = 0; i + WINDOW <= bytes.length; i++) {
      const hit = byWindow.get(bytes.toString('latin1', i, i + WINDOW));
      if (hit !== undefined) {
        leaks.push({ key: hit, where, how: `${how}: 16-byte run at offset ${i}` });
        return; // one report per piece is enough
      }
    }
    // keys shorter than a window (64-bit keys) are searched whole
    keys.forEach((key, k) => {
      if (key.length < WINDOW && bytes.includes(key)) leaks.push({ key: k, where, how: `${how}: whole short key` });
    });
  };

  for (const { where, bytes } of hay.bytes) scanBytes(where, 'raw bytes', bytes);
  for (const { where, text } of hay.texts) {
    keys.forEach((key, k) => {
      for (const [how, form] of [
        ['base64', key.toString('base64')],
        ['base64url', key.toString('base64url')],
        ['hex', key.toString('hex')],
        ['HEX', key.toString('hex').toUpperCase()],
      ] as const) {
        if (text.includes(form)) leaks.push({ key: k, where, how: `whole key as ${how}` });
      }
    });
    scanBytes(where, 'utf-8 text', Buffer.from(text, 'utf8'));
    for (const run of text.match(/[0-9a-fA-F]{32,}/g) ?? []) {
      for (const j of [0, 1]) {
        const even = run.slice(j, j + ((run.length - j) & ~1));
        scanBytes(where, `hex run (nibble offset ${j})`, Buffer.from(even, 'hex'));
      }
    }
    for (const run of text.match(/[A-Za-z0-9+/_-]{20,}/g) ?? []) {
      const std = run.replace(/-/g, '+').replace(/_/g, '/');
      for (const j of [0, 1, 2, 3]) scanBytes(where, `base64 run (char offset ${j})`, Buffer.from(std.slice(j), 'base64'));
    }
  }
  return leaks;
}

/** Every column of every table of the public schema, as text, and bytea columns also as raw bytes. */
export async function databaseHaystack(url: string): Promise<{ hay: Haystack; tables: string[]; columns: number; rows: number }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows: cols } = await c.query<{ table_name: string; column_name: string; data_type: string }>(
      `SELECT c.table_name, c.column_name, c.data_type
         FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
        ORDER BY c.table_name, c.ordinal_position`,
    );
    const hay: Haystack = { texts: [], bytes: [] };
    let rows = 0;
    const q = (id: string) => `"${id.replace(/"/g, '""')}"`;
    for (const col of cols) {
      const where = `${col.table_name}.${col.column_name}`;
      const text = await c.query<{ v: string | null }>(`SELECT ${q(col.column_name)}::text AS v FROM ${q(col.table_name)}`);
      rows += text.rows.length;
      hay.texts.push({ where: `${where} (as text)`, text: text.rows.map((r) => r.v ?? '').join('\n') });
      if (col.data_type === 'bytea') {
        const raw = await c.query<{ v: Buffer | null }>(`SELECT ${q(col.column_name)} AS v FROM ${q(col.table_name)}`);
        for (const [i, r] of raw.rows.entries()) if (r.v) hay.bytes.push({ where: `${where} row ${i} (as bytea)`, bytes: r.v });
      } else {
        // anything else, as the bytes of its text form (a text column holding raw material would show here)
        const raw = await c.query<{ v: Buffer | null }>(
          `SELECT convert_to(${q(col.column_name)}::text, 'UTF8') AS v FROM ${q(col.table_name)}`,
        );
        const all = Buffer.concat(raw.rows.flatMap((r) => (r.v ? [r.v, Buffer.from([0])] : [])));
        hay.bytes.push({ where: `${where} (as bytes of its text)`, bytes: all });
      }
    }
    return { hay, tables: [...new Set(cols.map((r) => r.table_name))], columns: cols.length, rows };
  } finally {
    await c.end();
  }
}

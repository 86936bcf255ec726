import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';

/**
 * Replaces `path` with `text` in one step: written to a fresh sibling created with mode 0600 (never readable by
 * others, not even for a moment), then renamed over the old file, so a reader such as wpa_supplicant sees the whole
 * old file or the whole new one, never half of each.
 */
export async function writePrivateFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

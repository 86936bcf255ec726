/**
 * Creates a throwaway SoftHSM2 token in a directory of its own, for tests and local runs of the PKCS#11 path.
 *
 * SoftHSM reads SOFTHSM2_CONF once, at C_Initialize; so call this before the first wrapper opens the module in this
 * process, and put every token a process needs in the same `dir` (calling again with the same dir adds a token).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** Where Debian/Ubuntu, Fedora/RHEL and source builds put the module. */
const MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib64/pkcs11/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export type SoftHsmToken = { module: string; conf: string; tokenLabel: string; pin: string };

export function createSoftHsmToken(
  dir: string,
  opts: { label?: string; pin?: string; soPin?: string } = {},
): SoftHsmToken | { skip: string } {
  const module = MODULE_CANDIDATES.find((p) => existsSync(p));
  if (!module) return { skip: `SoftHSM2 module not found (looked in ${MODULE_CANDIDATES.join(', ')}); apt-get install softhsm2` };
  const tokenLabel = opts.label ?? 'kms-test';
  const pin = opts.pin ?? randomBytes(8).toString('hex');
  const soPin = opts.soPin ?? randomBytes(8).toString('hex');

  // A relative tokendir would be resolved against whatever the current directory is when the module loads.
  const root = resolve(dir);
  const tokens = join(root, 'tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(root, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`, { mode: 0o600 });

  try {
    // softhsm2-util takes PINs only on its command line, where other local users can see them in the process list.
    // Acceptable for a throwaway test token with random PINs; never do this for a token that guards real keys.
    execFileSync(
      'softhsm2-util',
      ['--init-token', '--free', '--label', tokenLabel, '--so-pin', soPin, '--pin', pin],
      { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer; status?: number };
    if (err.code === 'ENOENT') return { skip: 'softhsm2-util not found on PATH; apt-get install softhsm2' };
    // Not err.message: it repeats the command line, PINs included.
    throw new Error(`softhsm2-util --init-token failed (exit ${err.status}): ${err.stderr?.toString().trim() ?? ''}`);
  }
  process.env.SOFTHSM2_CONF = conf;
  return { module, conf, tokenLabel, pin };
}

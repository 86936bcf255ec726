import type { TestKms } from './kms.js';

type Out = (line: string) => void;

/**
 * Runs a `kms <noun>` command (saeCommand, keyCommand, …) in this process against a test KME, with the operator's
 * certificate, and returns its exit status and what it printed on stdout and stderr.
 */
export function adminCli(
  k: () => TestKms,
  command: (args: string[], out: Out, err: Out) => Promise<number>,
): (...args: string[]) => Promise<{ code: number; out: string; err: string }> {
  return async (...args) => {
    const kms = k();
    const op = kms.pki.operators.OPERATOR_1!;
    const out: string[] = [];
    const err: string[] = [];
    const code = await command([...args, '--url', kms.kms.url, '--ca', kms.pki.ca, '--cert', op.cert, '--key', op.key], (l) => out.push(l), (l) => err.push(l));
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
}

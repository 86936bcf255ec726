// Zero-setup demo PKI: one CA plus a certificate per KME, registered SAE and "stranger" (an SAE the
// KME has never enrolled, signed by the same CA, so tests can prove trust != authorization).
// Idempotent on purpose: a restarted demo keeps the same files, so clients configured against
// them (curl commands in a README, a running encryptor) keep working.
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  createCa,
  entityIdProblem,
  issueClientCert,
  issueServerCert,
  loadIssued,
  writeIssued,
  type Issued,
} from "./certificates.js";

export type CertFiles = { cert: string; key: string };
export type DemoPki = {
  ca: string; // absolute path of ca.crt
  kmes: Record<string, CertFiles>;
  saes: Record<string, CertFiles>;
  strangers: Record<string, CertFiles>;
  /** Auditor client certificates (the config gives their CNs the auditor role). */
  auditors: Record<string, CertFiles>;
  /** Operator client certificates (the config gives their CNs the operator role). */
  operators: Record<string, CertFiles>;
};

const DAY_MS = 86_400_000;

// "Valid for at least a day more": a cert about to expire is replaced now rather than failing mid-demo.
function freshEnough(issued: Issued): boolean {
  const now = Date.now();
  return issued.cert.notBefore.getTime() <= now && issued.cert.notAfter.getTime() - now >= DAY_MS;
}

async function tryLoad(files: CertFiles): Promise<Issued | null> {
  if (!existsSync(files.cert) || !existsSync(files.key)) return null;
  try {
    return await loadIssued(files.cert, files.key);
  } catch {
    return null; // unreadable or mismatched: regenerate rather than refuse to start the demo
  }
}

async function reusableCa(dir: string): Promise<Issued | null> {
  const ca = await tryLoad({ cert: join(dir, "ca.crt"), key: join(dir, "ca.key") });
  return ca && freshEnough(ca) ? ca : null;
}

// A leaf is kept only if it is fresh, has the expected CN and was signed by *this* CA (an old CA's
// leaf left behind after the CA was regenerated must not survive).
async function reusableLeaf(ca: Issued, files: CertFiles, id: string): Promise<boolean> {
  const leaf = await tryLoad(files);
  if (!leaf || !freshEnough(leaf)) return false;
  if (leaf.cert.subjectName.getField("CN")[0] !== id) return false;
  if (leaf.cert.issuer !== ca.cert.subject) return false;
  return leaf.cert.verify({ publicKey: ca.keys.publicKey, signatureOnly: true });
}

/** Creates (or reuses) the demo CA and leaf certificates under `dir`. File names: ca.{crt,key},
 * kme-<id>.{crt,key}, sae-<id>.{crt,key}, stranger-<id>.{crt,key}, auditor-<id>.{crt,key}, operator-<id>.{crt,key}.
 * Returns absolute paths. */
export async function ensureDemoPki(
  dir: string,
  opts: { kmeIds: string[]; saeIds: string[]; strangerIds: string[]; auditorIds?: string[]; operatorIds?: string[] },
): Promise<DemoPki> {
  const abs = resolve(dir);
  mkdirSync(abs, { recursive: true });
  const auditorIds = opts.auditorIds ?? [];
  const operatorIds = opts.operatorIds ?? [];
  for (const id of [...opts.kmeIds, ...opts.saeIds, ...opts.strangerIds, ...auditorIds, ...operatorIds]) {
    const problem = entityIdProblem(id); // IDs become file names and certificate CNs
    if (problem) throw new Error(problem);
  }

  const existing = await reusableCa(abs);
  const ca = existing ?? (await createCa({ commonName: "QKD KMS demo CA (development only)" }));
  const caIsNew = !existing;
  if (caIsNew) writeIssued(abs, "ca", ca); // every leaf below is then reissued under the new CA

  const ensure = async (prefix: string, id: string, issue: () => Promise<Issued>): Promise<CertFiles> => {
    const files = { cert: join(abs, `${prefix}-${id}.crt`), key: join(abs, `${prefix}-${id}.key`) };
    if (!caIsNew && (await reusableLeaf(ca, files, id))) return files;
    return writeIssued(abs, `${prefix}-${id}`, await issue());
  };

  const result: DemoPki = { ca: join(abs, "ca.crt"), kmes: {}, saes: {}, strangers: {}, auditors: {}, operators: {} };
  for (const id of opts.kmeIds) {
    result.kmes[id] = await ensure("kme", id, () =>
      issueServerCert(ca, { commonName: id, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] }),
    );
  }
  for (const id of opts.saeIds) {
    result.saes[id] = await ensure("sae", id, () => issueClientCert(ca, { commonName: id }));
  }
  for (const id of opts.strangerIds) {
    result.strangers[id] = await ensure("stranger", id, () => issueClientCert(ca, { commonName: id }));
  }
  for (const id of auditorIds) {
    result.auditors[id] = await ensure("auditor", id, () => issueClientCert(ca, { commonName: id }));
  }
  for (const id of operatorIds) {
    result.operators[id] = await ensure("operator", id, () => issueClientCert(ca, { commonName: id }));
  }
  return result;
}

// Certificate revocation lists for the development CA (`kms pki revoke`): the CA signs a CRL naming the serial
// numbers of the certificates it revoked; a KME given it (config tls.crl) refuses those certificates.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import type { Issued } from "./certificates.js";

const cryptoImpl = webcrypto as unknown as Crypto;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

import { normalizeSerial } from "./serial.js";

export { normalizeSerial };

/** The serial numbers a CRL names, with when each was revoked. */
export function crlEntries(pem: string): Array<{ serial: string; revokedAt: Date }> {
  const crl = new x509.X509Crl(pem);
  return crl.entries.map((e) => ({ serial: normalizeSerial(e.serialNumber), revokedAt: e.revocationDate }));
}

/**
 * Writes `path` as a CRL the CA signs, naming the serials it already named plus `serial` (revoked now). Valid for
 * `days` (its nextUpdate: a KME refuses every client once its CRL has expired, so reissue before then). Returns the
 * serials it names.
 */
export async function revokeInCrl(ca: Issued, path: string, serial: string, days = 30): Promise<string[]> {
  const earlier = existsSync(path) ? crlEntries(readFileSync(path, "utf8")) : [];
  const entries = [...earlier.filter((e) => e.serial !== normalizeSerial(serial)), { serial: normalizeSerial(serial), revokedAt: new Date() }];
  await writeCrl(ca, path, entries, days);
  return entries.map((e) => e.serial);
}

/** Writes `path` again, naming what it named (or nothing, if it does not exist), with fresh dates: valid `days` from now. */
export async function refreshCrl(ca: Issued, path: string, days = 30): Promise<void> {
  await writeCrl(ca, path, existsSync(path) ? crlEntries(readFileSync(path, "utf8")) : [], days);
}

async function writeCrl(ca: Issued, path: string, entries: Array<{ serial: string; revokedAt: Date }>, days: number): Promise<void> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: ca.cert.subjectName,
      thisUpdate: new Date(Date.now() - 60_000),
      nextUpdate: new Date(Date.now() + days * 86_400_000),
      entries: entries.map((e) => ({ serialNumber: e.serial, revocationDate: e.revokedAt, reason: x509.X509CrlReason.keyCompromise })),
      signingKey: ca.keys.privateKey,
      signingAlgorithm: SIGNING,
    },
    cryptoImpl,
  );
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, x509.PemConverter.encode(crl.rawData, "X509 CRL") + "\n", { mode: 0o644 }); // the label OpenSSL reads
  renameSync(tmp, path);
}

// `kms pki ...`: a development CA for operators without a PKI of their own. Output goes through `out`
// so the caller decides where lines go (stdout, a test buffer). Key contents are never printed.
// Exit codes: 0 ok, 1 failed (file or crypto trouble), 2 usage error.
import { parseArgs, type ParseArgsConfig } from "node:util";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
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
import { normalizeSerial, revokeInCrl } from "./crl.js";

const USAGE = `usage: kms pki <command> [options]

commands:
  init --out DIR [--cn NAME] [--days N] [--force]
      create a CA: DIR/ca.crt and DIR/ca.key (refuses to replace an existing CA without --force)
  issue-kme --ca-dir DIR --id KME_ID [--dns NAME]... [--ip ADDR]... [--out DIR] [--days N]
      KME certificate (serverAuth + clientAuth): OUT/kme-<id>.crt, OUT/kme-<id>.key
      without --dns/--ip the names are DNS:localhost, IP:127.0.0.1, IP:::1
  issue-sae --ca-dir DIR --id SAE_ID [--out DIR] [--days N]
      SAE client certificate, CN = SAE ID: OUT/sae-<id>.crt, OUT/sae-<id>.key
  issue-auditor --ca-dir DIR --id AUDITOR_ID [--out DIR] [--days N]
      auditor client certificate (for the auditor API), CN = auditor ID: OUT/auditor-<id>.crt, .key
  issue-operator --ca-dir DIR --id OPERATOR_ID [--out DIR] [--days N]
      operator client certificate (for the admin API and kms sae …), CN = operator ID: OUT/operator-<id>.crt, .key
  revoke --ca-dir DIR --cert FILE [--crl FILE] [--days N]
      add the certificate to the CA's revocation list (default DIR/crl.pem), signed by the CA, valid N days
      (default 30); point the KMEs' tls.crl at it and reload them (kms tls reload, or SIGHUP)
  help
      this text

--out defaults to the CA directory. IDs: 1-64 characters from A-Z a-z 0-9 . _ ~ -
Keys are ECDSA P-256, written as PKCS#8 PEM with mode 0600. For development and testing only.`;

class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig["options"]>;
const str = { type: "string" } as const;
const COMMON: Options = { "ca-dir": str, id: str, out: str, days: str };
const COMMANDS: Record<string, Options> = {
  init: { out: str, cn: str, days: str, force: { type: "boolean" } },
  "issue-kme": { ...COMMON, dns: { type: "string", multiple: true }, ip: { type: "string", multiple: true } },
  "issue-sae": COMMON,
  "issue-auditor": COMMON,
  "issue-operator": COMMON,
  revoke: { "ca-dir": str, cert: str, crl: str, days: str },
};

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function required(v: Values, flag: string): string {
  const s = v[flag];
  if (typeof s !== "string" || s === "") throw new UsageError(`--${flag} is required`);
  return s;
}

function days(v: Values): number | undefined {
  const s = v.days;
  if (s === undefined) return undefined;
  const n = Number(s);
  if (typeof s !== "string" || !/^\d+$/.test(s) || n < 1 || n > 36500) {
    throw new UsageError(`--days must be a whole number of days between 1 and 36500, got "${String(s)}"`);
  }
  return n;
}

function id(v: Values): string {
  const value = required(v, "id");
  const problem = entityIdProblem(value);
  if (problem) throw new UsageError(`--id: ${problem} (SAE and KME IDs appear unencoded in ETSI 014 URL paths)`);
  return value;
}

function list(v: Values, flag: string): string[] {
  const s = v[flag];
  return Array.isArray(s) ? s.map(String) : [];
}

function report(out: (line: string) => void, issued: Issued, files: { cert: string; key: string }): void {
  const c = issued.cert;
  out(`${c.subject}  serial ${c.serialNumber}  valid until ${c.notAfter.toISOString()}`);
  out(`wrote certificate ${files.cert}`);
  out(`wrote private key ${files.key} (mode 0600)`);
}

async function init(v: Values, out: (line: string) => void): Promise<void> {
  const dir = resolve(required(v, "out"));
  // Replacing a CA silently orphans every certificate it signed, so demand an explicit --force.
  if (existsSync(join(dir, "ca.key")) && v.force !== true) {
    throw new UsageError(`${join(dir, "ca.key")} already exists; pass --force to replace the CA`);
  }
  const cn = typeof v.cn === "string" && v.cn !== "" ? v.cn : "QKD KMS development CA";
  const ca = await createCa({ commonName: cn, days: days(v) });
  report(out, ca, writeIssued(dir, "ca", ca));
}

async function loadCa(v: Values): Promise<Issued> {
  const dir = resolve(required(v, "ca-dir"));
  return loadIssued(join(dir, "ca.crt"), join(dir, "ca.key"), "CA");
}

async function issueKme(v: Values, out: (line: string) => void): Promise<void> {
  const kmeId = id(v);
  let dnsNames = list(v, "dns");
  let ipAddresses = list(v, "ip");
  for (const ip of ipAddresses) if (!isIP(ip)) throw new UsageError(`--ip "${ip}" is not an IP address`);
  for (const dns of dnsNames) {
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(dns)) {
      throw new UsageError(`--dns "${dns}" is not a DNS host name`);
    }
  }
  if (dnsNames.length === 0 && ipAddresses.length === 0) {
    dnsNames = ["localhost"];
    ipAddresses = ["127.0.0.1", "::1"];
  }
  const lifetime = days(v); // validate every flag before touching the CA
  const ca = await loadCa(v);
  const issued = await issueServerCert(ca, { commonName: kmeId, dnsNames, ipAddresses, days: lifetime });
  const dir = typeof v.out === "string" ? v.out : required(v, "ca-dir");
  report(out, issued, writeIssued(dir, `kme-${kmeId}`, issued));
}

/** A client certificate (SAE, auditor or operator: the registry, not the certificate, says which role a CN has). */
async function issueClient(v: Values, out: (line: string) => void, prefix: "sae" | "auditor" | "operator"): Promise<void> {
  const clientId = id(v);
  const lifetime = days(v);
  const ca = await loadCa(v);
  const issued = await issueClientCert(ca, { commonName: clientId, days: lifetime });
  const dir = typeof v.out === "string" ? v.out : required(v, "ca-dir");
  report(out, issued, writeIssued(dir, `${prefix}-${clientId}`, issued));
}

async function revoke(v: Values, out: (line: string) => void): Promise<void> {
  const certPath = required(v, "cert");
  const lifetime = days(v);
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(readFileSync(certPath, "utf8"));
  } catch (e) {
    throw new Error(`cannot read certificate ${certPath}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message}`);
  }
  const ca = await loadCa(v);
  // By signature, not by name: two CAs may well carry the same name.
  const caX = new X509Certificate(ca.certPem);
  if (!new X509Certificate(Buffer.from(cert.rawData)).verify(caX.publicKey)) {
    throw new Error(`${certPath} (issuer ${cert.issuer}) was not signed by this CA (${resolve(required(v, "ca-dir"))})`);
  }
  const crlPath = resolve(typeof v.crl === "string" ? v.crl : join(required(v, "ca-dir"), "crl.pem"));
  const serials = await revokeInCrl(ca, crlPath, cert.serialNumber, lifetime);
  out(`revoked ${cert.subject}  serial ${normalizeSerial(cert.serialNumber)}`);
  out(`wrote ${crlPath} (${serials.length} revoked certificate(s), valid ${lifetime ?? 30} days)`);
}

/** Runs `pki <command> ...` (argv excludes "pki"); returns the process exit code. */
export async function pkiCommand(argv: string[], out: (line: string) => void): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    out(USAGE);
    return command === undefined ? 2 : 0;
  }
  const options = COMMANDS[command];
  if (!options) {
    out(`unknown pki command "${command}"`);
    out(USAGE);
    return 2;
  }
  let values: Values;
  try {
    values = parseArgs({ args: rest, options, strict: true, allowPositionals: false }).values as Values;
  } catch (e) {
    // parseArgs messages already name the flag, e.g. "Unknown option '--bogus'".
    out(`${command}: ${(e as Error).message}`);
    return 2;
  }
  try {
    if (command === "init") await init(values, out);
    else if (command === "issue-kme") await issueKme(values, out);
    else if (command === "revoke") await revoke(values, out);
    else await issueClient(values, out, command === "issue-auditor" ? "auditor" : command === "issue-operator" ? "operator" : "sae");
    return 0;
  } catch (e) {
    out(`${command}: ${(e as Error).message}`);
    return e instanceof UsageError ? 2 : 1;
  }
}

// Development PKI: a CA and the KME/SAE certificates it signs. ECDSA P-256 with SHA-256 throughout,
// because clients that connect afresh for every key pay a full handshake each time and an ECDSA
// handshake is far cheaper than an RSA one (DESIGN.md §9). Not a production CA: a CRL (crl.ts) but no OCSP.
// @peculiar/x509 registers its algorithms through tsyringe, which needs the Reflect metadata polyfill loaded
// first (ESM evaluates imports in source order).
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from "node:fs";
import { join, resolve } from "node:path";

// Pass Node's webcrypto explicitly to every call, and also make it the library default for the
// calls (verify, publicKey.export) that fall back to the global provider.
const cryptoImpl = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(cryptoImpl);

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

/** keyPem is PKCS#8 PEM; keys.privateKey is extractable (it was, or will be, written to a file). */
export type Issued = { certPem: string; keyPem: string; cert: x509.X509Certificate; keys: CryptoKeyPair };

/** SAE and KME IDs appear unencoded in ETSI 014 URL paths, so only unreserved URL characters are
 * allowed; "." and ".." are excluded because clients and proxies collapse them as path segments. */
export const ENTITY_ID_PATTERN = /^[A-Za-z0-9._~-]{1,64}$/;

/** Returns why `id` is unusable as an SAE/KME ID, or null when it is fine. */
export function entityIdProblem(id: string): string | null {
  if (ENTITY_ID_PATTERN.test(id) && id !== "." && id !== "..") return null;
  return `"${id}" is not a valid ID: use 1-64 characters from A-Z a-z 0-9 . _ ~ - (not "." or "..")`;
}

// Fields every certificate shares. notBefore a minute back absorbs clock skew between machines.
function common(days: number | undefined, fallbackDays: number, notBefore?: Date, notAfter?: Date) {
  const d = days ?? fallbackDays;
  if (!(d > 0 && Number.isFinite(d))) throw new RangeError(`days must be a positive number, got ${d}`);
  return {
    serialNumber: serialNumber(),
    signingAlgorithm: SIGNING,
    notBefore: notBefore ?? new Date(Date.now() - 60_000),
    notAfter: notAfter ?? new Date(Date.now() + d * 86_400_000),
  };
}

// 16 random bytes with the top bit cleared (a positive INTEGER) and the next one set (no leading zero
// byte, so the DER serial is always exactly 16 bytes); 126 random bits.
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = 0x40 | (b[0]! & 0x3f);
  return b.toString("hex");
}

// JSON form rather than "CN=..." text so a CN containing ',' or '=' cannot inject extra RDNs.
const cnName = (cn: string): x509.JsonName => [{ CN: [cn] }];
// extractable so the private key can be written out as PKCS#8
const newKeys = (): Promise<CryptoKeyPair> => cryptoImpl.subtle.generateKey(EC, true, ["sign", "verify"]);
const ski = (key: CryptoKey) => x509.SubjectKeyIdentifierExtension.create(key, false, cryptoImpl);

async function finish(cert: x509.X509Certificate, keys: CryptoKeyPair): Promise<Issued> {
  const pkcs8 = await cryptoImpl.subtle.exportKey("pkcs8", keys.privateKey);
  return { certPem: cert.toString("pem") + "\n", keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n", cert, keys };
}

/** Self-signed CA, allowed to sign leaf certificates only (pathLength 0). Default 10 years. */
export async function createCa(opts: { commonName: string; days?: number }): Promise<Issued> {
  const keys = await newKeys();
  const extensions = [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await ski(keys.publicKey),
  ];
  const params = { ...common(opts.days, 3650), name: cnName(opts.commonName), keys, extensions };
  return finish(await x509.X509CertificateGenerator.createSelfSigned(params, cryptoImpl), keys);
}

type LeafOpts = { commonName: string; days?: number; notBefore?: Date; notAfter?: Date };

async function issueLeaf(ca: Issued, opts: LeafOpts, usages: string[], extra: x509.Extension[]): Promise<Issued> {
  const keys = await newKeys();
  // AKI must equal the CA's SKI byte for byte, so copy it; a CA without SKI (possible with an
  // operator's own CA) gets no AKI, which path builders then simply do not use.
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const extensions = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(usages, false),
    await ski(keys.publicKey),
    ...(caSki ? [new x509.AuthorityKeyIdentifierExtension(caSki.keyId, false)] : []),
    ...extra,
  ];
  const params = {
    ...common(opts.days, 365, opts.notBefore, opts.notAfter),
    subject: cnName(opts.commonName),
    issuer: ca.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions,
  };
  return finish(await x509.X509CertificateGenerator.create(params, cryptoImpl), keys);
}

/** KME certificate: serverAuth for SAEs, clientAuth because KMEs call each other over mTLS. */
export async function issueServerCert(
  ca: Issued,
  opts: { commonName: string; dnsNames?: string[]; ipAddresses?: string[]; days?: number },
): Promise<Issued> {
  const names: x509.JsonGeneralName[] = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  // Name checks use SANs only (the CN is ignored by TLS clients), so a server cert needs at least one.
  if (names.length === 0) throw new Error("a server certificate needs at least one DNS name or IP address");
  const san = new x509.SubjectAlternativeNameExtension(names, false);
  const eku = [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth];
  return issueLeaf(ca, { commonName: opts.commonName, days: opts.days }, eku, [san]);
}

/** SAE certificate: the CN is the SAE ID the KME authenticates. notBefore/notAfter let tests expire it. */
export async function issueClientCert(
  ca: Issued,
  opts: { commonName: string; days?: number; notBefore?: Date; notAfter?: Date },
): Promise<Issued> {
  return issueLeaf(ca, opts, [x509.ExtendedKeyUsage.clientAuth], []);
}

/** Loads a cert and its PKCS#8 key. Errors name the file, prefixed by `label` (e.g. "cannot read CA key
 * /x/ca.key: file not found"); they are thrown too if the key is not ECDSA P-256 or not the cert's. */
export async function loadIssued(certPath: string, keyPath: string, label = ""): Promise<Issued> {
  const what = (kind: string) => (label ? `${label} ${kind}` : kind);
  const fail = (kind: string, path: string, reason: string) => new Error(`cannot read ${what(kind)} ${path}: ${reason}`);
  const read = (kind: string, path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw fail(kind, path, err.code === "ENOENT" ? "file not found" : err.message);
    }
  };
  const certPem = read("certificate", certPath);
  const keyPem = read("key", keyPath);
  let cert: x509.X509Certificate;
  let keys: CryptoKeyPair;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch (e) {
    throw fail("certificate", certPath, `not a PEM certificate (${(e as Error).message})`);
  }
  try {
    const privateKey = await cryptoImpl.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(keyPem), EC, true, ["sign"]);
    keys = { privateKey, publicKey: await cert.publicKey.export(EC, ["verify"], cryptoImpl) };
  } catch (e) {
    throw fail("key", keyPath, `not a PKCS#8 ECDSA P-256 key for ${certPath} (${(e as Error).message})`);
  }
  // A swapped or stale key file would only surface as a handshake failure much later; catch it now.
  const probe = randomBytes(32);
  const sig = await cryptoImpl.subtle.sign(SIGNING, keys.privateKey, probe);
  if (!(await cryptoImpl.subtle.verify(SIGNING, keys.publicKey, sig, probe))) {
    throw fail("key", keyPath, `it does not belong to certificate ${certPath}`);
  }
  return { certPem, keyPem, cert, keys };
}

// Write to a temp file then rename: a crash never leaves a truncated key, and the mode is set at
// creation (writeFileSync's mode is ignored when the file already exists).
function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode }); // the key is never readable by others, not even briefly
  chmodSync(tmp, mode); // the mode option is filtered by umask; state it exactly
  renameSync(tmp, path);
}

/** Writes `${name}.crt` (0644) and `${name}.key` (0600) into dir; returns absolute paths. */
export function writeIssued(dir: string, name: string, issued: Issued): { cert: string; key: string } {
  const abs = resolve(dir);
  mkdirSync(abs, { recursive: true });
  const cert = join(abs, `${name}.crt`);
  const key = join(abs, `${name}.key`);
  writeAtomic(key, issued.keyPem, 0o600);
  writeAtomic(cert, issued.certPem, 0o644);
  return { cert, key };
}

// Issued certificates are checked the way they will be used: real TLS handshakes on 127.0.0.1, with
// Node's own verification (not our library's) deciding what is trusted.
import t from "tap";
import tls from "node:tls";
import { X509Certificate, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import {
  createCa,
  issueClientCert,
  issueServerCert,
  loadIssued,
  writeIssued,
  entityIdProblem,
} from "../../src/pki/certificates.js";
import * as x509 from "@peculiar/x509"; // after certificates.js, which installs the Reflect shim x509 needs

type Outcome = {
  server?: { authorized: boolean; authorizationError?: string; peerCN?: string | string[] };
  serverError?: string;
  clientError?: string;
  clientOk: boolean; // the client received the server's "ok" over the established channel
};

async function handshake(serverOpts: tls.TlsOptions, clientOpts: tls.ConnectionOptions): Promise<Outcome> {
  const outcome: Outcome = { clientOk: false };
  const server = tls.createServer(serverOpts, (socket) => {
    outcome.server = {
      authorized: socket.authorized,
      // typed as Error in @types/node, but Node sets the OpenSSL code string (e.g. CERT_HAS_EXPIRED)
      authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
      peerCN: socket.getPeerCertificate().subject?.CN,
    };
    socket.end("ok");
  });
  server.on("tlsClientError", (e) => (outcome.serverError = e.message));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  try {
    await new Promise<void>((done) => {
      const sock = tls.connect({ port, ...clientOpts });
      let data = "";
      sock.setEncoding("utf8").on("data", (d: string) => (data += d));
      sock.on("error", (e: NodeJS.ErrnoException) => (outcome.clientError = e.code ?? e.message));
      sock.on("close", () => {
        outcome.clientOk = data === "ok";
        done();
      });
    });
  } finally {
    await new Promise((r) => server.close(r));
  }
  return outcome;
}

const ca = await createCa({ commonName: "Test CA" });
const otherCa = await createCa({ commonName: "Someone else's CA" });
const kme = await issueServerCert(ca, {
  commonName: "KME_A",
  dnsNames: ["localhost"],
  ipAddresses: ["127.0.0.1", "::1"],
});
const sae = await issueClientCert(ca, { commonName: "SAE_A" });

const serverOpts = (extra: tls.TlsOptions = {}): tls.TlsOptions => ({
  cert: kme.certPem,
  key: kme.keyPem,
  ca: ca.certPem,
  requestCert: true,
  rejectUnauthorized: true,
  ...extra,
});
const client = (who: { certPem: string; keyPem: string }, extra: tls.ConnectionOptions = {}) => ({
  host: "127.0.0.1",
  servername: "localhost",
  ca: ca.certPem,
  cert: who.certPem,
  key: who.keyPem,
  ...extra,
});

t.test("certificates are ECDSA P-256 / SHA-256 with the intended extensions", async (t) => {
  const caX = new X509Certificate(ca.certPem);
  for (const issued of [ca, kme, sae]) {
    const x = new X509Certificate(issued.certPem);
    t.equal(x.publicKey.asymmetricKeyType, "ec");
    t.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    t.same(issued.cert.signatureAlgorithm, { name: "ECDSA", hash: { name: "SHA-256" } });
    t.ok(x.verify(caX.publicKey), "signed by the CA");
    t.match(x.serialNumber, /^[4-7][0-9A-F]{31}$/, "16-byte positive serial");
    t.ok(new Date(x.validFrom).getTime() < Date.now() - 30_000, "notBefore absorbs clock skew");
    t.equal(createPrivateKey(issued.keyPem).asymmetricKeyType, "ec");
    t.match(issued.keyPem, /^-----BEGIN PRIVATE KEY-----\n/, "PKCS#8 PEM");
  }
  t.equal(caX.ca, true);
  const kmeX = new X509Certificate(kme.certPem);
  t.equal(kmeX.ca, false);
  t.same(kmeX.keyUsage, ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"], "EKU serverAuth + clientAuth");
  t.equal(kmeX.checkHost("localhost"), "localhost");
  t.equal(kmeX.checkIP("127.0.0.1"), "127.0.0.1");
  t.equal(kmeX.checkIP("::1"), "::1");
  t.ok(kmeX.checkIssued(caX));
  const saeX = new X509Certificate(sae.certPem);
  t.same(saeX.keyUsage, ["1.3.6.1.5.5.7.3.2"], "EKU clientAuth only");
  t.equal(saeX.subject, "CN=SAE_A");
  t.not(kme.cert.serialNumber, sae.cert.serialNumber);
});

t.test("mTLS: server accepts an SAE cert, client verifies server by DNS name", async (t) => {
  const o = await handshake(serverOpts(), client(sae));
  t.equal(o.clientError, undefined);
  t.ok(o.clientOk);
  t.equal(o.server?.authorized, true);
  t.equal(o.server?.peerCN, "SAE_A", "peer subject CN is the SAE ID");
});

t.test("client verifies server by IP address 127.0.0.1", async (t) => {
  const o = await handshake(serverOpts(), client(sae, { servername: undefined }));
  t.equal(o.clientError, undefined);
  t.ok(o.clientOk);
});

t.test("client refuses the server under a name not in its SANs", async (t) => {
  const o = await handshake(serverOpts(), client(sae, { servername: "kme.example.com" }));
  t.equal(o.clientError, "ERR_TLS_CERT_ALTNAME_INVALID");
  t.notOk(o.clientOk);
});

t.test("an expired SAE cert is rejected", async (t) => {
  const day = 86_400_000;
  const expired = await issueClientCert(ca, {
    commonName: "SAE_OLD",
    notBefore: new Date(Date.now() - 3 * day),
    notAfter: new Date(Date.now() - day),
  });
  const seen = await handshake(serverOpts({ rejectUnauthorized: false }), client(expired));
  t.equal(seen.server?.authorized, false);
  t.equal(seen.server?.authorizationError, "CERT_HAS_EXPIRED");
  const strict = await handshake(serverOpts(), client(expired));
  t.notOk(strict.clientOk, "a strict server never talks to it");
  t.equal(strict.server, undefined);
});

t.test("a cert from another CA is rejected, both ways", async (t) => {
  const stranger = await issueClientCert(otherCa, { commonName: "SAE_A" });
  const seen = await handshake(serverOpts({ rejectUnauthorized: false }), client(stranger));
  t.equal(seen.server?.authorized, false);
  t.type(seen.server?.authorizationError, "string");
  t.notOk((await handshake(serverOpts(), client(stranger))).clientOk);

  const fakeKme = await issueServerCert(otherCa, { commonName: "KME_A", dnsNames: ["localhost"] });
  const o = await handshake(serverOpts({ cert: fakeKme.certPem, key: fakeKme.keyPem }), client(sae));
  t.equal(o.clientError, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
});

t.test("writeIssued / loadIssued round trip", async (t) => {
  const dir = t.testdir({});
  const files = writeIssued(join(dir, "sub"), "ca", ca);
  t.equal(files.cert, join(dir, "sub", "ca.crt"));
  t.equal(statSync(files.key).mode & 0o777, 0o600, "key file is 0600");
  const loaded = await loadIssued(files.cert, files.key);
  t.equal(loaded.cert.serialNumber, ca.cert.serialNumber);
  // The reloaded CA still signs certificates that Node accepts in a real handshake.
  const sae2 = await issueClientCert(loaded, { commonName: "SAE_B" });
  const o = await handshake(serverOpts(), client(sae2));
  t.equal(o.server?.peerCN, "SAE_B");

  const wrongKey = writeIssued(dir, "other", otherCa).key;
  await t.rejects(loadIssued(files.cert, wrongKey, "CA"), { message: new RegExp(`cannot read CA key ${wrongKey}: .*does not belong`) });
  await t.rejects(loadIssued(files.cert, join(dir, "nope.key"), "CA"), { message: /cannot read CA key .*nope\.key: file not found/ });
  writeFileSync(join(dir, "junk.crt"), "not a cert");
  await t.rejects(loadIssued(join(dir, "junk.crt"), files.key), { message: /cannot read certificate .*junk\.crt/ });
});

t.test("keys that are not ECDSA P-256 are refused with the file named", async (t) => {
  const dir = t.testdir({});
  const files = writeIssued(dir, "ca", ca);
  for (const [name, key] of [
    ["rsa.key", generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey],
    ["p384.key", generateKeyPairSync("ec", { namedCurve: "secp384r1" }).privateKey],
  ] as const) {
    writeFileSync(join(dir, name), key.export({ type: "pkcs8", format: "pem" }));
    await t.rejects(loadIssued(files.cert, join(dir, name), "CA"), {
      message: new RegExp(`cannot read CA key .*${name}: not a PKCS#8 ECDSA P-256 key`),
    });
  }
  await t.rejects(createCa({ commonName: "x", days: 0 }), RangeError);
  await t.rejects(loadIssued(files.cert, dir), { message: new RegExp(`cannot read key ${dir}: EISDIR`) });
  await t.rejects(issueServerCert(ca, { commonName: "KME_Z" }), { message: /at least one DNS name or IP address/ });
});

t.test("an operator CA without subjectKeyIdentifier still issues working certs", async (t) => {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const bare = await x509.X509CertificateGenerator.createSelfSigned(
    { name: "CN=Bare CA", keys, signingAlgorithm: { name: "ECDSA", hash: "SHA-256" }, extensions: [new x509.BasicConstraintsExtension(true, 0, true)] },
    crypto,
  );
  const dir = t.testdir({
    "ca.crt": bare.toString("pem"),
    "ca.key": x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"),
  });
  const loaded = await loadIssued(join(dir, "ca.crt"), join(dir, "ca.key"));
  const leaf = await issueClientCert(loaded, { commonName: "SAE_C" });
  t.equal(leaf.cert.getExtension(x509.AuthorityKeyIdentifierExtension), null, "no AKI to copy");
  const o = await handshake(serverOpts({ ca: [ca.certPem, loaded.certPem] }), client(leaf));
  t.equal(o.server?.authorized, true);
  t.equal(o.server?.peerCN, "SAE_C");
});

t.test("entity IDs are limited to unreserved URL characters", async (t) => {
  for (const ok of ["SAE_A", "kme-1.example~x", "a".repeat(64)]) t.equal(entityIdProblem(ok), null, ok);
  for (const bad of ["", "a/b", "a b", "é", "a".repeat(65), ".", "..", "a%2F"]) t.type(entityIdProblem(bad), "string", bad);
});

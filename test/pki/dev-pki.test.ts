// The demo PKI must be stable across restarts (same files, same serials) and heal itself when a
// piece is missing; and what it writes must work in a real mTLS handshake.
import t from "tap";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import type { AddressInfo } from "node:net";
import { ensureDemoPki, type DemoPki } from "../../src/pki/dev-pki.js";
import { createCa, issueClientCert, loadIssued, writeIssued } from "../../src/pki/certificates.js";

const ids = { kmeIds: ["KME_A", "KME_B"], saeIds: ["SAE_A", "SAE_B"], strangerIds: ["SAE_X"] };

const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256;
const allCerts = (p: DemoPki) =>
  [p.ca, ...[p.kmes, p.saes, p.strangers].flatMap((m) => Object.values(m).map((f) => f.cert))];

t.test("creates a CA and one cert per id, with absolute paths and 0600 keys", async (t) => {
  const dir = t.testdir({});
  const pki = await ensureDemoPki(`${dir}/nested/pki`, ids);
  t.ok(isAbsolute(pki.ca));
  t.same(Object.keys(pki.kmes), ids.kmeIds);
  t.same(Object.keys(pki.saes), ids.saeIds);
  t.same(Object.keys(pki.strangers), ids.strangerIds);
  const caX = new X509Certificate(readFileSync(pki.ca));
  for (const [id, f] of Object.entries({ ...pki.kmes, ...pki.saes, ...pki.strangers })) {
    t.ok(isAbsolute(f.cert) && isAbsolute(f.key));
    t.equal(statSync(f.key).mode & 0o777, 0o600, `${id} key is 0600`);
    const x = new X509Certificate(readFileSync(f.cert));
    t.equal(x.subject, `CN=${id}`);
    t.ok(x.verify(caX.publicKey), `${id} signed by the demo CA`);
  }
  const kmeX = new X509Certificate(readFileSync(pki.kmes.KME_A!.cert));
  t.equal(kmeX.checkHost("localhost"), "localhost");
  t.equal(kmeX.checkIP("127.0.0.1"), "127.0.0.1");
  t.equal(kmeX.checkIP("::1"), "::1");
});

t.test("a second call reuses every file; a missing ca.key regenerates everything", async (t) => {
  const dir = t.testdir({});
  const first = await ensureDemoPki(dir, ids);
  const before = allCerts(first).map(fingerprint);
  const second = await ensureDemoPki(dir, ids);
  t.same(second, first, "same paths");
  t.same(allCerts(second).map(fingerprint), before, "same certificates (fingerprints)");

  // A leaf lost on its own is reissued under the same CA; the rest stay.
  rmSync(first.saes.SAE_B!.key);
  const third = await ensureDemoPki(dir, ids);
  const after3 = allCerts(third).map(fingerprint);
  t.equal(after3[0], before[0], "CA kept");
  t.not(fingerprint(third.saes.SAE_B!.cert), fingerprint(first.saes.SAE_A!.cert));
  t.equal(fingerprint(third.saes.SAE_A!.cert), fingerprint(first.saes.SAE_A!.cert), "SAE_A kept");

  // A corrupt leaf is treated like a missing one rather than stopping the demo.
  writeFileSync(first.kmes.KME_B!.cert, "garbage");
  const healed = await ensureDemoPki(dir, ids);
  const healedPrints = allCerts(healed).map(fingerprint);
  t.ok(new X509Certificate(readFileSync(healed.kmes.KME_B!.cert)).verify(new X509Certificate(readFileSync(healed.ca)).publicKey));

  rmSync(`${dir}/ca.key`);
  const fourth = await ensureDemoPki(dir, ids);
  const after4 = allCerts(fourth).map(fingerprint);
  for (let i = 0; i < after4.length; i++) t.not(after4[i], healedPrints[i], `cert ${i} regenerated`);
  const caX = new X509Certificate(readFileSync(fourth.ca));
  t.ok(new X509Certificate(readFileSync(fourth.saes.SAE_A!.cert)).verify(caX.publicKey), "leaves follow the new CA");
});

t.test("new ids added later get certs without disturbing existing ones", async (t) => {
  const dir = t.testdir({});
  const first = await ensureDemoPki(dir, ids);
  const more = await ensureDemoPki(dir, { ...ids, saeIds: [...ids.saeIds, "SAE_C"] });
  t.equal(fingerprint(more.ca), fingerprint(first.ca));
  t.equal(fingerprint(more.saes.SAE_A!.cert), fingerprint(first.saes.SAE_A!.cert));
  t.ok(more.saes.SAE_C);
});

t.test("leaf files that belong to another id or another CA are replaced", async (t) => {
  const dir = t.testdir({});
  const elsewhere = t.testdir({});
  const first = await ensureDemoPki(dir, ids);
  const foreign = await ensureDemoPki(elsewhere, ids); // same CA name, different CA key
  copyFileSync(first.saes.SAE_A!.cert, first.saes.SAE_B!.cert);
  copyFileSync(first.saes.SAE_A!.key, first.saes.SAE_B!.key);
  copyFileSync(foreign.kmes.KME_A!.cert, first.kmes.KME_A!.cert);
  copyFileSync(foreign.kmes.KME_A!.key, first.kmes.KME_A!.key);
  // and a leaf from a differently named CA, and one that expires within the day
  const otherCa = await createCa({ commonName: "Other CA" });
  writeIssued(dir, "sae-SAE_A", await issueClientCert(otherCa, { commonName: "SAE_A" }));
  const loadedCa = await loadIssued(first.ca, join(dir, "ca.key"));
  const soon = new Date(Date.now() + 12 * 3_600_000);
  writeIssued(dir, "stranger-SAE_X", await issueClientCert(loadedCa, { commonName: "SAE_X", notAfter: soon }));

  const again = await ensureDemoPki(dir, ids);
  t.equal(fingerprint(again.ca), fingerprint(first.ca), "CA kept");
  for (const f of [again.saes.SAE_A!, again.strangers.SAE_X!]) {
    const x = new X509Certificate(readFileSync(f.cert));
    t.equal(x.issuer, "CN=QKD KMS demo CA (development only)");
    t.ok(new Date(x.validTo).getTime() > Date.now() + 30 * 86_400_000, `${x.subject} reissued with a full lifetime`);
  }
  const caX = new X509Certificate(readFileSync(again.ca));
  t.equal(new X509Certificate(readFileSync(again.saes.SAE_B!.cert)).subject, "CN=SAE_B");
  t.ok(new X509Certificate(readFileSync(again.kmes.KME_A!.cert)).verify(caX.publicKey), "KME_A re-signed by this CA");
});

t.test("rejects ids that cannot be used in URL paths", async (t) => {
  const dir = t.testdir({});
  await t.rejects(ensureDemoPki(dir, { ...ids, saeIds: ["SAE/A"] }), { message: /not a valid ID/ });
});

t.test("demo files work for mTLS: server KME_A, client SAE_A", async (t) => {
  const dir = t.testdir({});
  const pki = await ensureDemoPki(dir, ids);
  const read = (p: string) => readFileSync(p);
  const server = tls.createServer(
    { cert: read(pki.kmes.KME_A!.cert), key: read(pki.kmes.KME_A!.key), ca: read(pki.ca), requestCert: true, rejectUnauthorized: true },
    (s) => s.end(String(s.getPeerCertificate().subject.CN)),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const { port } = server.address() as AddressInfo;
  const reply = await new Promise<string>((resolve, reject) => {
    const sock = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: read(pki.ca),
      cert: read(pki.saes.SAE_A!.cert),
      key: read(pki.saes.SAE_A!.key),
    });
    let data = "";
    sock.setEncoding("utf8").on("data", (d: string) => (data += d));
    sock.on("error", reject).on("end", () => resolve(data));
  });
  t.equal(reply, "SAE_A");
});

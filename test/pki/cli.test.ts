// The pki CLI end to end: each command writes what it says, bad input names the flag or file and
// returns non-zero, keys are 0600 and never printed, and the files it writes carry a real HTTPS mTLS call.
import t, { type Test } from "tap";
import https from "node:https";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { pkiCommand } from "../../src/pki/cli.js";

async function run(...argv: string[]): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const code = await pkiCommand(argv, (l) => lines.push(l));
  return { code, text: lines.join("\n") };
}

const noKeyMaterial = (t: Test, text: string) => t.notMatch(text, /PRIVATE KEY|BEGIN/, "key contents never printed");

t.test("help prints usage", async (t) => {
  const r = await run("help");
  t.equal(r.code, 0);
  t.match(r.text, /issue-kme --ca-dir DIR --id KME_ID/);
  t.equal((await run()).code, 2, "no command is a usage error");
  const unknown = await run("frobnicate");
  t.equal(unknown.code, 2);
  t.match(unknown.text, /unknown pki command "frobnicate"/);
});

t.test("init, issue-kme, issue-sae write what they say", async (t) => {
  const dir = t.testdir({});
  const init = await run("init", "--out", dir, "--cn", "Ops CA", "--days", "30");
  t.equal(init.code, 0, init.text);
  for (const f of ["ca.crt", "ca.key"]) t.match(init.text, join(dir, f));
  noKeyMaterial(t, init.text);
  const caX = new X509Certificate(readFileSync(join(dir, "ca.crt")));
  t.equal(caX.subject, "CN=Ops CA");
  t.ok(new Date(caX.validTo).getTime() - Date.now() < 31 * 86_400_000, "--days honoured");
  t.equal(statSync(join(dir, "ca.key")).mode & 0o777, 0o600);

  const again = await run("init", "--out", dir);
  t.equal(again.code, 2);
  t.match(again.text, /ca\.key already exists; pass --force/);
  t.equal((await run("init", "--out", dir, "--force")).code, 0);
  const newCa = new X509Certificate(readFileSync(join(dir, "ca.crt")));
  t.not(newCa.fingerprint256, caX.fingerprint256, "--force replaced the CA");

  const out = join(dir, "kmes");
  const kme = await run("issue-kme", "--ca-dir", dir, "--id", "KME_A", "--dns", "kme-a.example", "--dns", "localhost", "--ip", "10.0.0.7", "--out", out);
  t.equal(kme.code, 0, kme.text);
  noKeyMaterial(t, kme.text);
  const kmeX = new X509Certificate(readFileSync(join(out, "kme-KME_A.crt")));
  t.equal(kmeX.subject, "CN=KME_A");
  t.equal(kmeX.subjectAltName, "DNS:kme-a.example, DNS:localhost, IP Address:10.0.0.7");
  t.ok(kmeX.verify(newCa.publicKey));
  t.equal(statSync(join(out, "kme-KME_A.key")).mode & 0o777, 0o600);

  const dflt = await run("issue-kme", "--ca-dir", dir, "--id", "KME_B");
  t.equal(dflt.code, 0, dflt.text);
  t.equal(
    new X509Certificate(readFileSync(join(dir, "kme-KME_B.crt"))).subjectAltName,
    "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
    "default names",
  );

  const sae = await run("issue-sae", "--ca-dir", dir, "--id", "SAE_A", "--days", "7");
  t.equal(sae.code, 0, sae.text);
  t.match(sae.text, join(dir, "sae-SAE_A.crt"));
  t.equal((await run("issue-sae", "--ca-dir", dir, "--id", "SAE_B", "--out", out)).code, 0);
  t.ok(existsSync(join(out, "sae-SAE_B.key")), "--out honoured");
  noKeyMaterial(t, sae.text);
  t.equal(new X509Certificate(readFileSync(join(dir, "sae-SAE_A.crt"))).subject, "CN=SAE_A");
  t.equal(statSync(join(dir, "sae-SAE_A.key")).mode & 0o777, 0o600);
});

t.test("bad input names the flag or file and returns non-zero", async (t) => {
  const dir = t.testdir({});
  t.equal((await run("init", "--out", dir)).code, 0);
  const cases: [string[], RegExp][] = [
    [["init"], /--out is required/],
    [["init", "--out", dir, "--bogus"], /Unknown option '--bogus'/],
    [["init", "--out", join(dir, "x"), "--days", "0"], /--days must be/],
    [["init", "--out", join(dir, "y"), "--days", "ten"], /--days must be/],
    [["issue-sae", "--ca-dir", dir], /--id is required/],
    [["issue-sae", "--id", "SAE_A"], /--ca-dir is required/],
    [["issue-sae", "--ca-dir", dir, "--id"], /--id/],
    [["issue-sae", "--ca-dir", dir, "--id", "SAE/A"], /--id: "SAE\/A" is not a valid ID.*unencoded in ETSI 014 URL paths/],
    [["issue-sae", "--ca-dir", dir, "--id", "a b"], /not a valid ID/],
    [["issue-kme", "--ca-dir", dir, "--id", "KME_A", "--ip", "999.1.1.1"], /--ip "999\.1\.1\.1" is not an IP address/],
    [["issue-kme", "--ca-dir", dir, "--id", "KME_A", "--dns", "bad_name!"], /--dns "bad_name!" is not a DNS host name/],
    [["issue-kme", "--ca-dir", dir, "--id", "KME_A", "--dns"], /--dns/],
    [["issue-sae", "--ca-dir", dir, "--id", "SAE_A", "--dns", "x"], /Unknown option '--dns'/],
  ];
  for (const [argv, msg] of cases) {
    const r = await run(...argv);
    t.equal(r.code, 2, argv.join(" "));
    t.match(r.text, msg, argv.join(" "));
  }
  t.notOk(existsSync(join(dir, "x")), "nothing written on a usage error");

  const missing = join(dir, "nowhere");
  const r = await run("issue-sae", "--ca-dir", missing, "--id", "SAE_A");
  t.equal(r.code, 1);
  t.match(r.text, `cannot read CA certificate ${join(missing, "ca.crt")}: file not found`);

  const other = t.testdir({ "ca.crt": readFileSync(join(dir, "ca.crt"), "utf8") });
  const noKey = await run("issue-kme", "--ca-dir", other, "--id", "KME_A");
  t.equal(noKey.code, 1);
  t.match(noKey.text, `cannot read CA key ${join(other, "ca.key")}: file not found`);
});

t.test("CLI-issued files carry a real HTTPS mTLS request", async (t) => {
  const dir = t.testdir({});
  for (const argv of [["init", "--out", dir], ["issue-kme", "--ca-dir", dir, "--id", "KME_A"], ["issue-sae", "--ca-dir", dir, "--id", "SAE_A"]]) {
    t.equal((await run(...argv)).code, 0);
  }
  const f = (name: string) => readFileSync(join(dir, name));
  const server = https.createServer(
    { cert: f("kme-KME_A.crt"), key: f("kme-KME_A.key"), ca: f("ca.crt"), requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const socket = req.socket as import("node:tls").TLSSocket;
      res.end(JSON.stringify({ authorized: socket.authorized, cn: socket.getPeerCertificate().subject.CN }));
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const { port } = server.address() as AddressInfo;
  for (const hostname of ["localhost", "127.0.0.1"]) {
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request(
        // host 127.0.0.1 always (localhost may resolve to ::1); servername picks the name checked
        { host: "127.0.0.1", servername: hostname === "localhost" ? "localhost" : undefined, port, path: "/", ca: f("ca.crt"), cert: f("sae-SAE_A.crt"), key: f("sae-SAE_A.key"), agent: false },
        (res) => {
          let data = "";
          res.setEncoding("utf8").on("data", (d: string) => (data += d)).on("end", () => resolve(data));
        },
      );
      req.on("error", reject).end();
    });
    t.same(JSON.parse(body), { authorized: true, cn: "SAE_A" }, `verified server as ${hostname}`);
  }
});

t.test("revoke adds certificates to the CA's CRL, which OpenSSL (Node's TLS) accepts", async (t) => {
  const { crlEntries } = await import("../../src/pki/crl.js");
  const { createSecureContext } = await import("node:tls");
  const dir = t.testdir({});
  t.equal((await run("init", "--out", dir)).code, 0);
  t.equal((await run("issue-sae", "--ca-dir", dir, "--id", "SAE_1")).code, 0);
  t.equal((await run("issue-sae", "--ca-dir", dir, "--id", "SAE_2")).code, 0);
  const first = await run("revoke", "--ca-dir", dir, "--cert", join(dir, "sae-SAE_1.crt"));
  t.equal(first.code, 0, first.text);
  t.match(first.text, /^revoked CN=SAE_1 {2}serial [0-9A-F]+$/m);
  t.match(first.text, new RegExp(`wrote ${join(dir, "crl.pem")} \\(1 revoked certificate\\(s\\), valid 30 days\\)`));
  const second = await run("revoke", "--ca-dir", dir, "--cert", join(dir, "sae-SAE_2.crt"), "--days", "7");
  t.match(second.text, /\(2 revoked certificate\(s\), valid 7 days\)/);
  const pem = readFileSync(join(dir, "crl.pem"), "utf8");
  const serials = [1, 2].map((i) => new X509Certificate(readFileSync(join(dir, `sae-SAE_${i}.crt`))).serialNumber.replace(/^(00)+/, "").toUpperCase());
  t.same(crlEntries(pem).map((e) => e.serial).sort(), serials.sort(), "both serials, in the CRL");
  t.doesNotThrow(() => createSecureContext({ crl: pem }), "a CRL OpenSSL parses");

  const other = join(dir, "other-ca");
  t.equal((await run("init", "--out", other)).code, 0);
  const foreign = await run("revoke", "--ca-dir", other, "--cert", join(dir, "sae-SAE_1.crt"));
  t.equal(foreign.code, 1, "a certificate of another CA");
  t.match(foreign.text, /\(issuer CN=QKD KMS development CA\) was not signed by this CA/, 'told apart by signature, though both CAs carry the same name');
  const missing = await run("revoke", "--ca-dir", dir, "--cert", join(dir, "nope.crt"));
  t.equal(missing.code, 1);
  t.match(missing.text, /cannot read certificate .*nope\.crt: file not found/);
  t.equal((await run("revoke", "--ca-dir", dir)).code, 2, "--cert is required");
});

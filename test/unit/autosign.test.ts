// vsop's autosign answer: CSRs made by openssl (as Puppet's agent makes them: challengePassword as
// a PrintableString attribute, trusted facts as UTF8String extension requests) are read and
// decided on; everything but the server's own challenge with exactly its facts stays unsigned.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { decideAutosign, type AutosignCandidate } from "../../src/puppet/autosign.js";
import { CsrError, parseCsr } from "../../src/puppet/csr.js";
import {
  checkExtraFact,
  csrAttributesYaml,
  hashChallenge,
  newChallenge,
  PP_INSTANCE_OID,
  trustedFacts,
} from "../../src/puppet/trusted-facts.js";

const ROLE = "1.3.6.1.4.1.34380.1.1.13";
const ENV = "1.3.6.1.4.1.34380.1.1.12";

const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-csr-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const key = path.join(dir, "key.pem");
execFileSync("openssl", ["genrsa", "-out", key, "2048"], { stdio: "ignore" });

/** A CSR as openssl makes it: CN, optional challenge, extension requests by OID. */
function csr(cn: string, challenge: string | undefined, exts: Record<string, string>): string {
  const conf = path.join(dir, "req.conf");
  const lines = [
    "[req]",
    "prompt = no",
    "distinguished_name = dn",
    ...(challenge !== undefined ? ["attributes = attrs"] : []),
    ...(Object.keys(exts).length ? ["req_extensions = ext"] : []),
    "[dn]",
    `CN = ${cn}`,
    "[attrs]",
    `challengePassword = ${challenge ?? ""}`,
    "[ext]",
    ...Object.entries(exts).map(([oid, v]) => `${oid} = ASN1:UTF8String:${v}`),
  ];
  writeFileSync(conf, lines.join("\n") + "\n");
  return execFileSync("openssl", ["req", "-new", "-key", key, "-config", conf], {
    encoding: "utf8",
  });
}

const HOST = "web-prod-1.example.test";
const facts = trustedFacts({ apptype: "web", environment: "prod", instance: "1" });
const goodExts = { [ROLE]: "web", [ENV]: "prod", [PP_INSTANCE_OID]: "1" };
const challenge = newChallenge();

function candidate(over: Partial<AutosignCandidate<string>> = {}): AutosignCandidate<string> {
  return {
    ref: "record",
    virtualserver: "ns/web-prod-1",
    challengeHash: hashChallenge(challenge),
    facts,
    ...over,
  };
}

test("a CSR is read: common name, challengePassword, extension requests, its signature", () => {
  const r = parseCsr(csr(HOST, challenge, goodExts));
  assert.equal(r.commonName, HOST);
  assert.equal(r.challengePassword, challenge);
  assert.equal(r.extensions.get(ROLE), "web");
  assert.equal(r.extensions.get(PP_INSTANCE_OID), "1");
  assert.equal(r.signatureValid, true);
});

test("a CSR whose signed part was changed does not verify", () => {
  const pem = csr(HOST, challenge, goodExts);
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
  const i = der.indexOf(Buffer.from("web-prod-1"));
  der[i] = "x".charCodeAt(0); // xeb-prod-1: the CN changes, the signature does not
  assert.equal(parseCsr(der).signatureValid, false);
});

test("garbage, truncation and oversize are refused as CsrError", () => {
  assert.throws(() => parseCsr("not a csr"), CsrError);
  const der = Buffer.from(
    csr(HOST, challenge, goodExts).replace(/-----[^-]+-----|\s/g, ""),
    "base64",
  );
  assert.throws(() => parseCsr(der.subarray(0, der.length - 10)), CsrError);
  assert.throws(() => parseCsr(Buffer.concat([der, Buffer.alloc(20_000)])), CsrError);
  assert.throws(() => parseCsr(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff])), CsrError);
});

test("the server's own CSR with its challenge and exactly its facts is signed", () => {
  const v = decideAutosign(HOST, csr(HOST, challenge, goodExts), [candidate()]);
  assert.equal(v.sign, true);
  if (v.sign) assert.equal(v.candidate.ref, "record");
});

test("everything else stays unsigned, with a reason", () => {
  const cases: [string, ReturnType<typeof decideAutosign>][] = [
    ["UnknownName", decideAutosign(HOST, csr(HOST, challenge, goodExts), [])],
    ["NameMismatch", decideAutosign("db-prod-1.example.test", csr(HOST, challenge, goodExts), [])],
    ["NoChallenge", decideAutosign(HOST, csr(HOST, undefined, goodExts), [candidate()])],
    ["WrongChallenge", decideAutosign(HOST, csr(HOST, newChallenge(), goodExts), [candidate()])],
    [
      "ChallengeSpent",
      decideAutosign(HOST, csr(HOST, challenge, goodExts), [
        candidate({ challengeSpentAt: "2026-01-01T00:00:00Z" }),
      ]),
    ],
    [
      "NoChallengeIssued",
      decideAutosign(HOST, csr(HOST, challenge, goodExts), [
        candidate({ challengeHash: undefined }),
      ]),
    ],
    [
      "ExtensionMismatch",
      decideAutosign(HOST, csr(HOST, challenge, { ...goodExts, [ROLE]: "db" }), [candidate()]),
    ],
    [
      "ExtensionMismatch",
      decideAutosign(
        HOST,
        csr(HOST, challenge, { ...goodExts, "1.3.6.1.4.1.34380.1.3.39": "true" }),
        [candidate()],
      ),
    ],
    ["MalformedRequest", decideAutosign(HOST, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA", [])],
  ];
  for (const [reason, v] of cases) {
    assert.equal(v.sign, false, reason);
    if (!v.sign) assert.equal(v.reason, reason);
  }
  const pp = decideAutosign(
    HOST,
    csr(HOST, challenge, { ...goodExts, "1.3.6.1.4.1.34380.1.3.39": "true" }),
    [candidate()],
  );
  if (!pp.sign) assert.match(pp.message, /1\.3\.6\.1\.4\.1\.34380\.1\.3\.39/);
  const role = decideAutosign(HOST, csr(HOST, challenge, { ...goodExts, [ROLE]: "db" }), [
    candidate(),
  ]);
  if (!role.sign) assert.match(role.message, /pp_role/);
});

test("csr_attributes.yaml: the challenge and the facts, registered names by name, pp_instance by OID", () => {
  const yaml = csrAttributesYaml(challenge, { ...facts, pp_datacenter: "dc1" });
  assert.match(yaml, new RegExp(`^  "1\\.2\\.840\\.113549\\.1\\.9\\.7": "${challenge}"$`, "m"));
  assert.match(yaml, /^ {2}"pp_role": "web"$/m);
  assert.match(yaml, /^ {2}"pp_environment": "prod"$/m);
  assert.match(yaml, new RegExp(`^  "${PP_INSTANCE_OID.replace(/\./g, "\\.")}": "1"$`, "m"));
  assert.match(yaml, /^ {2}"pp_datacenter": "dc1"$/m);
});

test("a class may add registered or private facts, not the name's own or arbitrary ones", () => {
  assert.equal(checkExtraFact("pp_datacenter", "dc1"), undefined);
  assert.equal(checkExtraFact("1.3.6.1.4.1.34380.1.2.7", "x"), undefined);
  assert.match(checkExtraFact("pp_role", "db")!, /hostname/);
  assert.match(checkExtraFact("pp_cli_auth", "true")!, /registered/);
  assert.match(checkExtraFact("1.3.6.1.4.1.34380.1.3.39", "true")!, /registered/);
  assert.match(checkExtraFact("pp_zone", "a\nb")!, /printable/);
});

test("POST /autosign/<certname>: the bearer secret, a bounded body, vsop's answer as 204/403", async (t) => {
  const { ProvisioningServer } = await import("../../src/provision/server.js");
  const secret = "s3cret-for-the-master-0123456789";
  const asked: [string, string][] = [];
  const server = new ProvisioningServer({
    lookup: async () => undefined,
    onBuilt: async () => undefined,
    rateLimit: { requests: 3, windowMs: 60_000 },
    autosign: {
      secret,
      decide: async (certname, pem) => {
        asked.push([certname, pem]);
        return certname === HOST
          ? { sign: true, reason: "Signed" }
          : { sign: false, reason: "UnknownName" };
      },
    },
  });
  const { port } = await server.listen("127.0.0.1", 0);
  t.after(() => server.close());
  const post = (name: string, body: string, auth?: string) =>
    fetch(`http://127.0.0.1:${port}/autosign/${name}`, {
      method: "POST",
      body,
      headers: auth ? { authorization: auth } : {},
    });
  const pem = csr(HOST, challenge, goodExts);
  assert.equal((await post(HOST, pem, `Bearer ${secret}`)).status, 204);
  assert.deepEqual(asked[0], [HOST, pem]);
  const refused = await post("ghost-prod-1.example.test", pem, `Bearer ${secret}`);
  assert.equal(refused.status, 403);
  assert.match(await refused.text(), /UnknownName/);
  assert.equal((await post(HOST, "x".repeat(40_000), `Bearer ${secret}`)).status, 413);
  // Authenticated calls are not rate limited: the master asks for every server.
  for (let i = 0; i < 5; i++) assert.equal((await post(HOST, pem, `Bearer ${secret}`)).status, 204);
  // Without the secret: 401, counted against the source's limit, never asked.
  const before = asked.length;
  assert.equal((await post(HOST, pem)).status, 401);
  assert.equal((await post(HOST, pem, "Bearer wrong-secret-000000000000")).status, 401);
  assert.equal((await post(HOST, pem, `Basic ${secret}`)).status, 401);
  assert.equal((await post(HOST, pem, "Bearer x")).status, 429);
  assert.equal(asked.length, before);
  assert.equal((await fetch(`http://127.0.0.1:${port}/autosign/${HOST}`)).status, 429);
  assert.equal(
    (
      await fetch(`http://127.0.0.1:${port}/autosign/${HOST}`, {
        headers: { authorization: `Bearer ${secret}` },
      })
    ).status,
    405,
  );
});

test("without an autosign secret the route does not exist", async (t) => {
  const { ProvisioningServer } = await import("../../src/provision/server.js");
  const server = new ProvisioningServer({
    lookup: async () => undefined,
    onBuilt: async () => undefined,
  });
  const { port } = await server.listen("127.0.0.1", 0);
  t.after(() => server.close());
  const res = await fetch(`http://127.0.0.1:${port}/autosign/${HOST}`, {
    method: "POST",
    body: "x",
  });
  assert.equal(res.status, 404);
});

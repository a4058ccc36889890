// A real Puppet master (the stack's puppetserver, hack/puppetserver.sh): servers installed by
// vsop get their certificate through the master's policy-based autosign, which asks vsop
// (deploy/puppet/vsop-autosign → POST /autosign/<certname>); the master classifies them by the
// trusted facts from their name (hack/puppet/: role::web, role::db); a CSR with a forged
// challenge or for a name vsop does not know stays unsigned; deleting a server revokes and cleans
// its certificate, so the same hostname gets a new one.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
  copyFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  metric,
  nodeDown,
  OPERATOR_NS,
  removeDNSNames,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  CSR_ATTRIBUTES_PATH,
  fetchBootstrap,
  installFromGuestinfo,
  readGuestinfo,
} from "../support/installer.js";

const execFileAsync = promisify(execFile);
const CLASS = "puppet-master";
const LABELS = { "vsop-test": "puppetserver" };
const CA_SECRET = "puppet-ca-client";
const HOSTS = {
  web: "web-psrv-1.example.test",
  db: "db-psrv-1.example.test",
  app: "app-psrv-1.example.test",
  ghost: "ghost-psrv-9.example.test",
};
const ADDRESSES: [string, string][] = [
  ["10.12.30.211", HOSTS.web],
  ["10.12.30.212", HOSTS.db],
  ["10.12.30.213", HOSTS.app],
];
let ns: string;
let op: Operator;
const nodeDir = (fqdn: string) => path.join(stackEnv("VSOP_STACK_DIR"), "nodes", fqdn);
const clientDir = () => stackEnv("VSOP_PUPPET_CA_CLIENT_DIR");

/** The CA's certificate_status API with vsop's client certificate, through curl (not vsop). */
function ca(method: "GET" | "PUT" | "DELETE", certname: string, body?: string) {
  const out = execFileSync(
    "curl",
    [
      "-sS",
      "--max-time",
      "10",
      "-X",
      method,
      "--cert",
      path.join(clientDir(), "tls.crt"),
      "--key",
      path.join(clientDir(), "tls.key"),
      "--cacert",
      stackEnv("VSOP_PUPPET_CA"),
      ...(body ? ["-H", "content-type: application/json", "--data", body] : []),
      "-w",
      "\n%{http_code}",
      `${stackEnv("VSOP_PUPPET_SERVER")}/puppet-ca/v1/certificate_status/${certname}`,
    ],
    { encoding: "utf8" },
  );
  const i = out.lastIndexOf("\n");
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

function certStatus(certname: string): { state: string; serial_number: number } | undefined {
  const r = ca("GET", certname);
  return r.status === 200
    ? (JSON.parse(r.body) as { state: string; serial_number: number })
    : undefined;
}

/** Leftovers of an earlier run of this file on the same stack: the CA forgets these names. */
function cleanCA(certname: string) {
  if (certStatus(certname)?.state === "signed")
    ca("PUT", certname, JSON.stringify({ desired_state: "revoked" }));
  ca("DELETE", certname);
}

before(() => {
  installVsop();
  ns = createNamespace("psrv");
  for (const h of Object.values(HOSTS)) {
    nodeDown(h);
    cleanCA(h);
  }
  removeDNSNames(ADDRESSES.map(([, n]) => n));
  addDNSRecords(ADDRESSES);
  const read = (f: string) => readFileSync(path.join(clientDir(), f), "utf8");
  apply({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: CA_SECRET, namespace: OPERATOR_NS },
    type: "kubernetes.io/tls",
    stringData: {
      "tls.crt": read("tls.crt"),
      "tls.key": read("tls.key"),
      "ca.crt": read("ca.crt"),
    },
  });
  const master = new URL(stackEnv("VSOP_PUPPET_SERVER"));
  applyClass(CLASS, {
    boot: { method: "guestinfo", installTimeout: "10m" },
    puppet: {
      server: master.hostname,
      serverPort: Number(master.port),
      caURL: master.origin,
      caClientSecret: CA_SECRET,
    },
  });
  op = startOperator("puppetserver", [
    "--label-selector",
    "vsop-test=puppetserver",
    "--resync-period",
    "5s",
    "--autosign-secret-file",
    stackEnv("VSOP_PUPPET_AUTOSIGN_SECRET"),
  ]);
  // The master's autosign command asks this test's operator.
  writeFileSync(
    stackEnv("VSOP_PUPPET_AUTOSIGN_CONFIG"),
    `url=http://127.0.0.1:${op.provisioningPort}\n` +
      `secret_file=${stackEnv("VSOP_PUPPET_AUTOSIGN_SECRET")}\ntimeout=10\n`,
  );
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  for (const h of Object.values(HOSTS)) nodeDown(h);
  removeDNSNames(ADDRESSES.map(([, n]) => n));
});

test("the master: its own CA, and vsop's client certificate may use single certificate statuses only", () => {
  const get = (p: string, method = "GET") =>
    execFileSync(
      "curl",
      [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        method,
        "--cert",
        path.join(clientDir(), "tls.crt"),
        "--key",
        path.join(clientDir(), "tls.key"),
        "--cacert",
        stackEnv("VSOP_PUPPET_CA"),
        `${stackEnv("VSOP_PUPPET_SERVER")}${p}`,
      ],
      { encoding: "utf8" },
    );
  assert.equal(get("/puppet-ca/v1/certificate_status/puppet"), "200");
  assert.equal(get("/puppet-ca/v1/certificate_statuses/all"), "403", "no listing");
  assert.equal(get("/puppet-ca/v1/clean", "PUT"), "403", "no bulk clean");
  assert.equal(get("/puppet-ca/v1/certificate_revocation_list", "PUT"), "403", "no CRL update");
  // The master's own certificate carries the CA's trust: verified against the stack's CA only.
  assert.equal(certStatus("puppet")?.state, "signed");
});

/** Applies the server and plays its install; its Puppet runs are agent runs against the master. */
async function server(name: string, hostname: string) {
  apply(virtualServer(ns, name, hostname, CLASS, LABELS));
  await installFromGuestinfo(hostname.split(".")[0]!, hostname, "default.pp", { master: true });
}

const autosigned = async (result: string, reason: string) =>
  metric((await scrape(op.metricsPort)).body, "vsop_puppet_autosign_total", { result, reason });

test("new servers get certificates through vsop's autosign and the catalog of their role", async () => {
  await Promise.all([server("web", HOSTS.web), server("db", HOSTS.db)]);
  for (const name of ["web", "db"]) {
    const vs = await waitForCondition(ns, name, "Ready", "True", undefined, 240_000);
    assert.equal(cond(vs, "PuppetApplied")?.status, "True");
    const hostname = name === "web" ? HOSTS.web : HOSTS.db;
    // The certificate vsop shows is the one the CA signed.
    const st = certStatus(hostname);
    assert.equal(st?.state, "signed", `${hostname} signed at the CA`);
    const cert = await waitFor(`${name}'s certificate in status`, () => {
      const c = (getVS(ns, name)?.status?.puppet as { certificate?: Record<string, string> })
        ?.certificate;
      return c?.serial ? c : undefined;
    });
    assert.equal(cert.serial, String(st!.serial_number));
    assert.ok(Date.parse(cert.notAfter!) > Date.now(), `notAfter ${cert.notAfter}`);
    // Classified by the trusted facts from its name, as the master saw them in its certificate.
    const trusted = readFileSync(path.join(nodeDir(hostname), "trusted.txt"), "utf8");
    assert.match(trusted, new RegExp(`certname=${hostname} authenticated=remote role=${name} `));
    assert.match(trusted, /environment=psrv instance=1$/m);
  }
  const index = readFileSync(path.join(nodeDir(HOSTS.web), "www/index.html"), "utf8");
  assert.match(index, /role web from the Puppet master/);
  assert.ok(existsSync(path.join(nodeDir(HOSTS.db), "db.conf")), "role::db applied on db");
  assert.ok(!existsSync(path.join(nodeDir(HOSTS.db), "www")), "role::web not applied on db");
  assert.ok(!existsSync(path.join(nodeDir(HOSTS.web), "db.conf")), "role::db not applied on web");
  assert.equal(await autosigned("signed", "Signed"), 2);
  // The one-time challenges are spent and were never logged.
  const logs = op.logs();
  for (const h of [HOSTS.web, HOSTS.db]) {
    const attrs = readFileSync(path.join(nodeDir(h), "puppet/csr_attributes.yaml"), "utf8");
    const challenge = /"1\.2\.840\.113549\.1\.9\.7": "([0-9a-f]{64})"/.exec(attrs)![1]!;
    assert.ok(!logs.includes(challenge), "no challenge in vsop's log");
  }
});

/**
 * Submits a CSR for `certname` with these csr_attributes from a throw-away agent confdir. (The
 * agent then asks for its certificate, which the master answers after 30 s when it is unsigned.)
 */
async function submitCSR(certname: string, csrAttributes: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-forge-"));
  try {
    execFileSync("mkdir", ["-p", path.join(dir, "ssl/certs")]);
    copyFileSync(stackEnv("VSOP_PUPPET_CA"), path.join(dir, "ssl/certs/ca.pem"));
    writeFileSync(path.join(dir, "csr_attributes.yaml"), csrAttributes);
    writeFileSync(
      path.join(dir, "puppet.conf"),
      `[main]\ncertname = ${certname}\nserver = localhost\nserverport = ${stackEnv("VSOP_PUPPET_PORT")}\n` +
        `ssldir = ${dir}/ssl\nvardir = ${dir}/var\nlogdir = ${dir}/log\nrundir = ${dir}/run\n` +
        `csr_attributes = ${dir}/csr_attributes.yaml\nkeylength = 2048\n`,
    );
    await execFileAsync("puppet", ["ssl", "submit_request", "--confdir", dir], {
      timeout: 90_000,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a CSR with a forged challenge, or for a name vsop does not know, stays unsigned", async () => {
  // app-psrv-1 is installing: its installer fetched its keys, so vsop issued it a challenge.
  apply(virtualServer(ns, "app", HOSTS.app, CLASS, LABELS));
  const url = await waitFor("app's bootstrap URL", () => {
    try {
      return bootstrapURLIn(readGuestinfo("app-psrv-1").userData);
    } catch {
      return undefined;
    }
  });
  const boot = await waitFor("app's bootstrap", async () => {
    const r = await fetchBootstrap(url);
    return r.status === 503 ? undefined : r;
  });
  assert.equal(boot.status, 200);
  const genuine = bootstrapFiles(boot.body)[CSR_ATTRIBUTES_PATH]!;
  const real = /"1\.2\.840\.113549\.1\.9\.7": "([0-9a-f]{64})"/.exec(genuine)![1]!;
  const forged = genuine.replace(real, "0123456789abcdef".repeat(4));
  assert.notEqual(forged, genuine);

  await Promise.all([submitCSR(HOSTS.app, forged), submitCSR(HOSTS.ghost, genuine)]);
  assert.equal(certStatus(HOSTS.app)?.state, "requested", "the forged CSR is not signed");
  assert.equal(certStatus(HOSTS.ghost)?.state, "requested", "the unknown name is not signed");
  await waitFor(
    "the refusals counted",
    async () =>
      (await autosigned("refused", "WrongChallenge")) >= 1 &&
      (await autosigned("refused", "UnknownName")) >= 1,
  );
  const lines = op
    .logs()
    .split("\n")
    .filter((l) => l.includes("Puppet CSR left unsigned"));
  assert.ok(lines.some((l) => l.includes(HOSTS.app) && l.includes('"reason":"WrongChallenge"')));
  assert.ok(lines.some((l) => l.includes(HOSTS.ghost) && l.includes('"reason":"UnknownName"')));
  assert.ok(!op.logs().includes(real), "the real challenge is not in vsop's log");
  cleanCA(HOSTS.app);
  cleanCA(HOSTS.ghost);
});

test("delete + re-create of the same hostname: the certificate is cleaned, a new one signed, Ready", async () => {
  const before = (getVS(ns, "web")?.status?.puppet as { certificate: { serial: string } })
    .certificate.serial;
  kubectl(["-n", ns, "delete", "virtualserver", "web", "--wait=false"]);
  await waitFor("web released", () => !getVS(ns, "web"), 120_000);
  assert.equal(certStatus(HOSTS.web), undefined, "the CA forgot web's certificate");
  nodeDown(HOSTS.web);

  await server("web", HOSTS.web);
  const vs = await waitForCondition(ns, "web", "Ready", "True", undefined, 240_000);
  const after = await waitFor("web's new certificate in status", () => {
    const c = (getVS(ns, "web")?.status?.puppet as { certificate?: { serial?: string } })
      ?.certificate;
    return c?.serial;
  });
  assert.notEqual(after, before, "a new certificate");
  assert.equal(String(certStatus(HOSTS.web)?.serial_number), after);
  assert.equal(vs.status?.phase, "Ready");
});

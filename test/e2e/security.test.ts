// Security end to end: a server cannot speak for another; install secrets are served once and
// die with the install, however it became known; the provisioning endpoint cannot be made to
// read Secrets. (No credential in any log across an API-server outage: security-outage.test.ts.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNS,
  apply,
  auditEvents,
  cond,
  createNamespace,
  deleteServers,
  getJSON,
  getVS,
  installVsop,
  kubectl,
  madeBy,
  nodeDown,
  nodeUp,
  OPERATOR_NS,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc } from "../support/govc.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  callBuilt,
  fetchBootstrap,
  fetchKickstart,
  IDENTITY_KEY_PATH,
  installNode,
  readGuestinfo,
} from "../support/installer.js";

const LABELS = { "vsop-test": "security" };
const GI = "sec-guestinfo";
const HOSTS = {
  a: "seca-prod-1.example.test",
  b: "secb-prod-1.example.test",
  retain: "secr-prod-1.example.test",
};
let ns: string;
let op: Operator;
/** Server A's bootstrap URL, read before its install data was cleared. */
let bootstrapA = "";

const short = (fqdn: string) => fqdn.split(".")[0]!;

before(() => {
  installVsop();
  ns = createNamespace("security");
  applyClass(GI, { boot: { method: "guestinfo", installTimeout: "10m" } });
  addDNS("10.12.30.162", HOSTS.a);
  addDNS("10.12.30.163", HOSTS.b);
  addDNS("10.12.30.164", HOSTS.retain);
  op = startOperator("security", [
    "--label-selector",
    "vsop-test=security",
    "--resync-period",
    "3s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  await op?.stop();
  for (const h of Object.values(HOSTS)) nodeDown(h);
});

function server(name: string, hostname: string, cls: string, spec: Record<string, unknown> = {}) {
  apply(virtualServer(ns, name, hostname, cls, LABELS, spec));
}

test("a node holding server A's identity key cannot make server B Installed", async () => {
  server("a", HOSTS.a, GI);
  server("b", HOSTS.b, GI);
  const urlOf = (name: string) =>
    waitFor(`the bootstrap URL in ${name}'s guestinfo`, () => {
      try {
        return bootstrapURLIn(readGuestinfo(name).userData);
      } catch {
        return undefined;
      }
    });
  const urlA = await urlOf(short(HOSTS.a));
  const urlB = await urlOf(short(HOSTS.b));
  bootstrapA = urlA;
  const filesA = await installNode(HOSTS.a, urlA);
  // B's installer fetched B's keys (vsop recorded B's public key) ...
  const b = await waitFor("B's keys", async () => {
    const r = await fetchBootstrap(urlB);
    return r.status === 503 ? undefined : r;
  });
  assert.equal(b.status, 200);
  const keyB = bootstrapFiles(b.body)[IDENTITY_KEY_PATH]!;
  // ... but what answers as B is a compromised A: the shared MCollective keys, and A's key.
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-sec-"));
  try {
    writeFileSync(path.join(dir, "a.pem"), filesA[IDENTITY_KEY_PATH]!, { mode: 0o600 });
    writeFileSync(path.join(dir, "b.pem"), keyB, { mode: 0o600 });
    nodeUp(HOSTS.b, "default.pp", path.join(dir, "a.pem"));

    await waitForCondition(ns, "a", "Installed", "True", undefined, 60_000);
    await waitFor(
      "vsop to refuse the impostor's answer",
      () => /not signed by the server's key/.test(op.logs()) && op.logs().includes(HOSTS.b),
      60_000,
    );
    await sleep(6_000);
    const vsB = getVS(ns, "b")!;
    assert.equal(cond(vsB, "Installed")?.status, "False", "B is not Installed on A's word");
    assert.equal(vsB.status?.phase, "Installing");
    const bootNic = vsB.status?.conditions?.find((c) => c.type === "BootNICDisconnected");
    assert.notEqual(bootNic?.status, "True");

    // The real B, with its own key, is believed: the test can tell the two apart.
    nodeDown(HOSTS.b);
    nodeUp(HOSTS.b, "default.pp", path.join(dir, "b.pem"));
    await waitForCondition(ns, "b", "Installed", "True", undefined, 60_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("install detected by discovery: the token is spent, /ks, /bootstrap and /built answer 410", async () => {
  // Server A above was never called back: vsop learnt of its install by asking it.
  const vs = await waitForCondition(ns, "a", "Installed", "True", undefined, 60_000);
  const url = bootstrapA;
  assert.ok(url, "server A's install ran");
  const token = url.split("/").pop()!;
  await waitFor(
    "the token spent",
    async () => (await fetchKickstart(op.provisioningPort, token)).status === 410,
  );
  assert.equal((await fetchBootstrap(url)).status, 410);
  assert.equal(await callBuilt(url.replace("/bootstrap/", "/built/")), 410);
  const secret = getJSON<{ data: Record<string, string> }>([
    "-n",
    OPERATOR_NS,
    "get",
    "secret",
    `vsop-install-${vs.metadata.uid}`,
  ]);
  assert.equal(secret.data.token, undefined, "the token's value is gone from the record");
  assert.ok(secret.data.identityPublicKey, "the public half of A's key is kept");
});

test("deleted with Retain before the install finished: token gone, guestinfo cleared", async () => {
  server("retain", HOSTS.retain, GI, { deletionPolicy: "Retain" });
  const url = await waitFor("the bootstrap URL", () => {
    try {
      return bootstrapURLIn(readGuestinfo(short(HOSTS.retain)).userData);
    } catch {
      return undefined;
    }
  });
  kubectl(["-n", ns, "delete", "vsrv", "retain", "--wait=true", "--timeout=60s"]);
  const status = (await fetchBootstrap(url)).status;
  assert.ok(status === 404 || status === 410, `bootstrap after delete: ${status}`);
  const vm = findVMs(short(HOSTS.retain))[0];
  assert.ok(vm, "the VM stays");
  const left = Object.entries(extraConfig(vm)).filter(([k, v]) => k.startsWith("guestinfo.") && v);
  assert.deepEqual(left, [], "no install data left on the retained VM");
  govc(["vm.destroy", short(HOSTS.retain)]);
});

test("the provisioning endpoint answers from its watch and limits each source", async () => {
  // The limiter counts in fixed 10 s windows, and the tests before made requests in the current
  // one: start in a fresh window, so the first 60 are all answered.
  await sleep(10_000 - (Date.now() % 10_000) + 100);
  const since = new Date();
  const statuses: number[] = [];
  for (let i = 0; i < 150; i++)
    statuses.push(
      (await fetchKickstart(op.provisioningPort, randomBytes(32).toString("base64url"))).status,
    );
  // 60 per 10 s per source: 150 quick requests span at most two windows.
  assert.ok(statuses.filter((s) => s === 404).length >= 60, statuses.join(","));
  assert.ok(statuses.filter((s) => s === 429).length >= 30, statuses.join(","));
  assert.deepEqual(new Set(statuses), new Set([404, 429]));
  await sleep(1000);
  // A token lookup would list Secrets by label (or get one not named after a known server's uid);
  // reconciles of the servers still installing read their own records by name meanwhile.
  const known = new Set(
    getJSON<{ items: { metadata: { uid: string } }[] }>(["get", "virtualservers", "-A"]).items.map(
      (v) => `vsop-install-${v.metadata.uid}`,
    ),
  );
  // This operator's requests: the files beside it start operators, which list their records.
  const reads = auditEvents(since)
    .filter(madeBy(op))
    .filter(
      (e) =>
        e.objectRef?.resource === "secrets" &&
        (e.verb === "list" ||
          (e.verb === "get" &&
            e.objectRef.name?.startsWith("vsop-install-") &&
            !known.has(e.objectRef.name))),
    );
  assert.equal(reads.length, 0, "no Secret read for an unknown token");
});

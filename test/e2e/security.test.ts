// Security end to end: no credential in any log, Event or status even across an API-server
// outage; a server cannot speak for another; install secrets are served once and die with the
// install, however it became known.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { publicKeyPemOf } from "../../src/provision/identity-key.js";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as yaml from "js-yaml";
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
  nodeDown,
  nodeUp,
  OPERATOR_NS,
  startOperator,
  tryGetJSON,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { secretHits } from "../support/secret-scan.js";
import { extraConfig, findVMs, govc } from "../support/govc.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  callBuilt,
  fetchBootstrap,
  newInstallerNonce,
  fetchKickstart,
  IDENTITY_KEY_PATH,
  installNode,
  installRecord,
  installToken,
  readGuestinfo,
} from "../support/installer.js";

const LABELS = { "vsop-test": "security" };
const GI = "sec-guestinfo";
const NET = "sec-network";
const BROKER_SECRET = "mco-broker-security";
const HOSTS = {
  outage: "secnet-prod-1.example.test",
  outkeys: "seck-prod-1.example.test",
  a: "seca-prod-1.example.test",
  b: "secb-prod-1.example.test",
  retain: "secr-prod-1.example.test",
};
// A broker login of its own, so the scan looks for a password nothing else contains.
const brokerUser = `vsop-sec-${randomBytes(3).toString("hex")}`;
// It starts with "-" on purpose: a password is any string, and a tool that reads one as an option
// (rabbitmqctl did, and failed CI) must not see it on a command line.
const brokerPassword = `-${randomBytes(18).toString("base64url")}`;
let ns: string;
let op: Operator;
/** Server A's bootstrap URL, read before its install data was cleared. */
let bootstrapA = "";

const rabbitmqctl = (args: string[]) => execFileSync("rabbitmqctl", args, { stdio: "ignore" });
/** The password goes on stdin: on the command line it would show in a failed command's message,
 *  and one that starts with "-" would be read as an option. */
const addBrokerUser = (user: string, password: string) =>
  execFileSync("rabbitmqctl", ["add_user", user], {
    input: password,
    stdio: ["pipe", "ignore", "ignore"],
  });
const short = (fqdn: string) => fqdn.split(".")[0]!;

before(() => {
  installVsop();
  ns = createNamespace("security");
  addBrokerUser(brokerUser, brokerPassword);
  rabbitmqctl(["set_permissions", "-p", "/", brokerUser, ".*", ".*", ".*"]);
  apply({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: BROKER_SECRET, namespace: OPERATOR_NS },
    stringData: { username: brokerUser, password: brokerPassword },
  });
  const mcollective = { credentialsSecret: BROKER_SECRET };
  applyClass(GI, { boot: { method: "guestinfo", installTimeout: "10m" }, mcollective });
  applyClass(NET, { boot: { method: "network", installTimeout: "10m" }, mcollective });
  addDNS("10.12.30.161", HOSTS.outage);
  addDNS("10.12.30.165", HOSTS.outkeys);
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
  rabbitmqctl(["delete_user", brokerUser]);
});

function server(name: string, hostname: string, cls: string, spec: Record<string, unknown> = {}) {
  apply(virtualServer(ns, name, hostname, cls, LABELS, spec));
}

/** The literal credentials this test's operator holds, by what they are. */
function secrets(extra: Record<string, string> = {}): Record<string, string> {
  const kc = yaml.load(
    readFileSync(path.join(stackEnv("VSOP_STACK_DIR"), "operator.kubeconfig"), "utf8"),
  ) as { users: { user: { token: string } }[] };
  return {
    "ServiceAccount token": kc.users[0]!.user.token,
    "vCenter password": stackEnv("GOVC_PASSWORD"),
    "broker password": brokerPassword,
    ...extra,
  };
}

function assertNoSecrets(where: string, text: string, literals: Record<string, string>): void {
  assert.deepEqual(secretHits(text, literals), [], `${where} carries credentials`);
}

test("an API-server outage mid-install leaves no credential in the log, Events or status", async () => {
  server("outage", HOSTS.outage, NET);
  // A second installer asks for its keys in the outage.
  server("outkeys", HOSTS.outkeys, NET);
  const installing = (name: string) =>
    waitFor(
      `${name}'s VM powered on`,
      () => {
        const v = getVS(ns, name);
        return v?.status?.phase === "Installing" ? v : undefined;
      },
      120_000,
    );
  const [vs, keysVS] = await Promise.all([installing("outage"), installing("outkeys")]);
  const token = installToken(vs.metadata.uid);
  const keysToken = installToken(keysVS.metadata.uid);
  const keysKs = await fetchKickstart(op.provisioningPort, keysToken);
  assert.equal(keysKs.status, 200);
  const keysURL = bootstrapURLIn(keysKs.body);
  const keysNonce = newInstallerNonce();
  // The installer's side: kickstart and keys, so the operator has handled every secret once.
  const ks = await fetchKickstart(op.provisioningPort, token);
  assert.equal(ks.status, 200);
  // It names its own token in its URLs, and nothing else.
  assertNoSecrets("the kickstart", ks.body.replaceAll(token, "<its token>"), secrets());
  const keys = await fetchBootstrap(bootstrapURLIn(ks.body));
  assert.equal(keys.status, 200);
  assert.ok(keys.body.includes(brokerPassword), "the one-time bundle does carry the login");

  const pid = Number(
    readFileSync(path.join(stackEnv("VSOP_STACK_DIR"), "pids/kube-apiserver.pid"), "utf8"),
  );
  const builtURL = `http://127.0.0.1:${op.provisioningPort}/built/${token}`;
  const before = op.logs().length;
  process.kill(pid, "SIGSTOP");
  let inOutage: Promise<number | string>;
  let keysInOutage: Promise<number | string>;
  try {
    // The installer reports built in the outage. Recording that needs the API server, so a
    // request is surely in flight: it times out after the client's 30 s, while the operator holds
    // every secret, and its error is logged. (Waiting for a reconcile's own request was a race:
    // with nothing changing, a reconcile of an installing server may send none.)
    inOutage = callBuilt(builtURL, 60_000).catch((err: Error) => err.message);
    keysInOutage = fetchBootstrap(keysURL, { timeoutMs: 60_000, nonce: keysNonce }).then(
      (r) => r.status,
      (err: Error) => err.message,
    );
    await sleep(40_000);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await waitFor("the API server back", () => tryGetJSON(["get", "ns", "default"]), 60_000);
  assert.equal(await inOutage, 503, "a callback that could not be recorded is to be retried");
  assert.equal(await keysInOutage, 503, "keys that could not be recorded are to be fetched again");
  // The outage did reach the operator (else this test proves nothing): a request timed out.
  await waitFor(
    "the operator to log the outage",
    () => /KubeUnreachable|did not answer/.test(op.logs().slice(before)),
    60_000,
  );

  // The installer retries. The API server may still have applied the write it read after the
  // thaw, after the operator gave up on it: then the token is spent and the retry is told so.
  assert.ok([204, 410].includes(await callBuilt(builtURL)), "the retried callback is taken");
  await waitForCondition(ns, "outage", "Installed", "True", undefined, 60_000);
  // The keys' retry (with the installer's nonce) gets keys, whether or not the API server
  // applied the timed-out write after the thaw; they are the keys recorded, and nobody else
  // gets them.
  const retried = await fetchBootstrap(keysURL, { nonce: keysNonce });
  assert.equal(retried.status, 200, "the retried key fetch is answered");
  const identity = bootstrapFiles(retried.body)[IDENTITY_KEY_PATH];
  assert.ok(identity, "the bundle carries an identity key");
  assert.equal(
    publicKeyPemOf(identity),
    installRecord(keysVS.metadata.uid).identityPublicKey,
    "the identity key handed out is the one recorded",
  );
  assert.equal((await fetchBootstrap(keysURL)).status, 410, "and to nobody else");
  assert.equal(
    (await fetchBootstrap(keysURL, { nonce: newInstallerNonce() })).status,
    410,
    "nor to another installer",
  );

  const found = secrets({ "install token": token, "second install token": keysToken });
  assertNoSecrets("the operator log", op.logs(), found);
  assertNoSecrets("the Events", kubectl(["-n", ns, "get", "events", "-o", "json"]), found);
  assertNoSecrets("the status", JSON.stringify(getVS(ns, "outage")?.status), found);
});

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
  const reads = auditEvents(since).filter(
    (e) =>
      e.objectRef?.resource === "secrets" &&
      (e.verb === "list" ||
        (e.verb === "get" &&
          e.objectRef.name?.startsWith("vsop-install-") &&
          !known.has(e.objectRef.name))),
  );
  assert.equal(reads.length, 0, "no Secret read for an unknown token");
});

// Security across an API-server outage: no credential in any log, Event or status, and an
// installer's callback or key fetch that could not be recorded is answered 503, to be retried.
// It stops the API server every other file shares, so the Makefile runs it alone.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as yaml from "js-yaml";
import { publicKeyPemOf } from "../../src/provision/identity-key.js";
import {
  addDNS,
  apply,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
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
import {
  bootstrapFiles,
  bootstrapURLIn,
  callBuilt,
  fetchBootstrap,
  fetchKickstart,
  IDENTITY_KEY_PATH,
  installRecord,
  installToken,
  newInstallerNonce,
} from "../support/installer.js";

const LABELS = { "vsop-test": "security-outage" };
const NET = "sec-outage-network";
const BROKER_SECRET = "mco-broker-security-outage";
const HOSTS = {
  outage: "secnet-prod-1.example.test",
  outkeys: "seck-prod-1.example.test",
};
// A broker login of its own, so the scan looks for a password nothing else contains.
const brokerUser = `vsop-sec-${randomBytes(3).toString("hex")}`;
// It starts with "-" on purpose: a password is any string, and a tool that reads one as an option
// (rabbitmqctl did, and failed CI) must not see it on a command line.
const brokerPassword = `-${randomBytes(18).toString("base64url")}`;
let ns: string;
let op: Operator;

const rabbitmqctl = (args: string[]) => execFileSync("rabbitmqctl", args, { stdio: "ignore" });
/** The password goes on stdin: on the command line it would show in a failed command's message,
 *  and one that starts with "-" would be read as an option. */
const addBrokerUser = (user: string, password: string) =>
  execFileSync("rabbitmqctl", ["add_user", user], {
    input: password,
    stdio: ["pipe", "ignore", "ignore"],
  });

before(() => {
  installVsop();
  ns = createNamespace("security-outage");
  addBrokerUser(brokerUser, brokerPassword);
  rabbitmqctl(["set_permissions", "-p", "/", brokerUser, ".*", ".*", ".*"]);
  apply({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: BROKER_SECRET, namespace: OPERATOR_NS },
    stringData: { username: brokerUser, password: brokerPassword },
  });
  applyClass(NET, {
    boot: { method: "network", installTimeout: "10m" },
    mcollective: { credentialsSecret: BROKER_SECRET },
  });
  addDNS("10.12.30.161", HOSTS.outage);
  addDNS("10.12.30.165", HOSTS.outkeys);
  op = startOperator("security-outage", [
    "--label-selector",
    "vsop-test=security-outage",
    "--resync-period",
    "3s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  await op?.stop();
  rabbitmqctl(["delete_user", brokerUser]);
});

function server(name: string, hostname: string) {
  apply(virtualServer(ns, name, hostname, NET, LABELS));
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
  server("outage", HOSTS.outage);
  // A second installer asks for its keys in the outage.
  server("outkeys", HOSTS.outkeys);
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

// Rebuild in place through the operator, the guest played by test code as in lifecycle.test.ts: a
// server installed over the network and Ready is rebuilt (spec.rebuildRequestedAt) on the same
// VM: powered off and on again (vCenter's events), its boot NIC connected for the install and
// disconnected after it (govc), a new install token (the old one is refused), the kickstart
// fetched and /built called again, a new identity key, Puppet run again, Ready; each value once.
// A guestinfo server gets fresh cloud-init data (a new token and instance-id), cleared again after.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  getJSON,
  getVS,
  installVsop,
  kubectl,
  nodeDown,
  OPERATOR_NS,
  removeDNSNames,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs, govc, nics, portGroupNames, destroyVMs } from "../support/govc.js";
import {
  bootstrapURLIn,
  callBuilt,
  fetchKickstart,
  installFromGuestinfo,
  installNode,
  installToken,
  readGuestinfo,
} from "../support/installer.js";

const CLASS = "rebuild-network";
const LABELS = { "vsop-test": "rebuild" };
const HOST = "rbld-prod-1.example.test";
const VM = "rbld-prod-1";
const REQUEST = "2026-06-01T08:00:00Z";
const GI_CLASS = "rebuild-guestinfo";
const GI_HOST = "rbgi-prod-1.example.test";
const GI_VM = "rbgi-prod-1";
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  destroyVMs([VM, GI_VM]); // leftovers of an interrupted run
  ns = createNamespace("rebuild");
  applyClass(CLASS, { hardware: { cpus: 1, memoryMiB: 512 } });
  applyClass(GI_CLASS, { boot: { method: "guestinfo", installTimeout: "10m" } });
  addDNSRecords([
    ["10.12.30.243", HOST],
    ["10.12.30.247", GI_HOST],
  ]);
  op = startOperator("rebuild", ["--label-selector", "vsop-test=rebuild", "--resync-period", "2s"]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
  nodeDown(GI_HOST);
  removeDNSNames([HOST, GI_HOST]);
});

interface Rebuild {
  requestedAt?: string;
  startedAt?: string;
  reinstallStartedAt?: string;
  completedAt?: string;
}
const rebuildOf = (vs: VS | undefined) => (vs?.status?.rebuild ?? {}) as Rebuild;
const vmOf = (vs: VS | undefined) =>
  (vs?.status?.vm ?? {}) as { moRef?: string; instanceUUID?: string };

/** The boot NIC's flags, as govc reads them. */
function bootNic(): { connected: boolean; startConnected: boolean } {
  const pg = portGroupNames();
  const nic = nics(findVMs(VM)[0]!).find((n) => pg[n.backing!.port!.portgroupKey] === "Boot-VLAN");
  assert.ok(nic, "the VM has its boot NIC");
  return { connected: nic.connectable!.connected, startConnected: nic.connectable!.startConnected };
}

/** How often vCenter's events for the VM say each thing. */
function vmEvents() {
  const path = govc(["find", "/", "-type", "m", "-name", VM]).trim();
  const lines = govc(["events", "-n", "1000", path]).split("\n");
  const count = (s: string) => lines.filter((l) => l.includes(s)).length;
  return { stopping: count("is stopping"), starting: count("is starting") };
}

/**
 * Plays the installer of one install: waits for vsop to wait for it, fetches the kickstart with
 * the server's current token, installs the node from the kickstart's bootstrap URL (its own
 * identity key, mcollectived restarted) and calls /built. Returns the token it used.
 */
async function playInstall(uid: string): Promise<string> {
  await waitForCondition(ns, "rb", "Installed", "False", "WaitingForInstall", 120_000);
  const token = installToken(uid);
  const ks = await fetchKickstart(op.provisioningPort, token);
  assert.equal(ks.status, 200, "the kickstart is served for the current token");
  assert.match(ks.body, /rbld-prod-1\.example\.test/);
  // /built from the kickstart's %post, before the installed system's mcollectived starts: vsop
  // finds a node that answers installed too, after which /built is 410 (token spent).
  const built = `http://127.0.0.1:${op.provisioningPort}/built/${token}`;
  await installNode(HOST, bootstrapURLIn(ks.body), undefined, {
    beforeStart: async () => assert.equal(await callBuilt(built), 204),
  });
  return token;
}

/** The install record's token hash label (a spent token's value is gone, its hash stays). */
const tokenHash = (uid: string) =>
  getJSON<{ metadata: { labels: Record<string, string> } }>([
    "-n",
    OPERATOR_NS,
    "get",
    "secret",
    `vsop-install-${uid}`,
  ]).metadata.labels["provisioning.vsop.dev/install-token-hash"];

let first: { moRef: string; instanceUUID: string; token: string; lastRunAt: string; uid: string };

test("a network install reaches Ready with its boot NIC disconnected", async () => {
  apply(virtualServer(ns, "rb", HOST, CLASS, LABELS));
  const created = await waitForCondition(ns, "rb", "VMCreated", "True", undefined, 120_000);
  const token = await playInstall(created.metadata.uid);
  const ready = await waitForCondition(ns, "rb", "Ready", "True", undefined, 180_000);
  assert.deepEqual(bootNic(), { connected: false, startConnected: false });
  const [vm, ...others] = findVMs(VM);
  assert.equal(others.length, 0);
  assert.equal(vm!.self.value, vmOf(ready).moRef);
  first = {
    moRef: vm!.self.value,
    instanceUUID: vm!.config.instanceUuid,
    token,
    lastRunAt: (ready.status?.puppet as { lastRunAt: string }).lastRunAt,
    uid: ready.metadata.uid,
  };
});

test("a rebuild reinstalls the same VM: boot NIC on for the install, new token, Ready, boot NIC off", async () => {
  assert.ok(first, "the first install ran");
  const before = vmEvents();
  kubectl([
    "-n",
    ns,
    "patch",
    "vsrv",
    "rb",
    "--type=merge",
    "-p",
    JSON.stringify({ spec: { rebuildRequestedAt: REQUEST } }),
  ]);
  assert.equal(getVS(ns, "rb")!.spec.rebuildRequestedAt, REQUEST, "the CRD keeps the field");

  // Back to Installing: the VM powered off and on again, the boot NIC connected for the installer.
  const installing = await waitFor(
    "the rebuilt server installing",
    () => {
      const vs = getVS(ns, "rb");
      const installed = cond(vs, "Installed");
      return vs?.status?.phase === "Installing" &&
        installed?.reason === "WaitingForInstall" &&
        rebuildOf(vs).reinstallStartedAt
        ? vs
        : undefined;
    },
    120_000,
  );
  assert.equal(rebuildOf(installing).requestedAt, REQUEST);
  assert.equal(cond(installing, "PuppetApplied")?.status, "False");
  assert.equal(cond(installing, "BootNICDisconnected")?.status, "False");
  assert.deepEqual(
    bootNic(),
    { connected: true, startConnected: true },
    "govc: boot NIC connected",
  );
  assert.equal(findVMs(VM)[0]!.runtime.powerState, "poweredOn");
  const during = vmEvents();
  assert.deepEqual(
    [during.stopping - before.stopping, during.starting - before.starting],
    [1, 1],
    "powered off once and on once",
  );
  assert.equal(vmOf(installing).moRef, first.moRef, "the same VM");

  // The old token is gone: the old installer (or a copy of its kickstart) gets nothing.
  const old = await fetchKickstart(op.provisioningPort, first.token);
  assert.notEqual(old.status, 200, "the previous install's token is refused");
  const token = await playInstall(first.uid);
  assert.notEqual(token, first.token, "a new install token");

  const ready = await waitForCondition(ns, "rb", "Ready", "True", undefined, 180_000);
  const r = rebuildOf(ready);
  assert.equal(r.requestedAt, REQUEST);
  assert.ok(r.startedAt && r.reinstallStartedAt && r.completedAt, JSON.stringify(r));
  assert.ok(r.completedAt! >= r.reinstallStartedAt!);
  assert.deepEqual(bootNic(), { connected: false, startConnected: false }, "govc: boot NIC off");
  const [vm, ...others] = findVMs(VM);
  assert.equal(others.length, 0, "no second VM");
  assert.equal(vm!.self.value, first.moRef, "same moRef");
  assert.equal(vm!.config.instanceUuid, first.instanceUUID, "same instanceUUID");
  assert.equal(vmOf(ready).moRef, first.moRef);
  const lastRunAt = (ready.status?.puppet as { lastRunAt: string }).lastRunAt;
  assert.ok(lastRunAt > first.lastRunAt, "Puppet ran again after the reinstall");
  assert.equal(cond(ready, "Installed")?.status, "True");
  const install = ready.status?.install as { startedAt: string; completedAt: string };
  assert.ok(install.startedAt >= r.reinstallStartedAt!, "status.install is the new install's");

  const stages = events(ns, "rb")
    .filter((e) => ["RebuildStarted", "Reinstalling", "Rebuilt"].includes(e.reason))
    .map((e) => `${e.type} ${e.reason}`);
  assert.deepEqual(stages.sort(), [
    "Normal RebuildStarted",
    "Normal Rebuilt",
    "Normal Reinstalling",
  ]);
  assert.ok(!op.logs().includes(token), "the token is never logged");
});

test("the same value rebuilds nothing more (resyncs every 2 s)", async () => {
  const before = vmEvents();
  const status = getVS(ns, "rb")!.status;
  const token = tokenHash(first.uid);
  await sleep(8000);
  assert.deepEqual(vmEvents(), before, "no power change");
  const now = getVS(ns, "rb")!;
  assert.deepEqual(now.status?.rebuild, status?.rebuild);
  assert.equal(cond(now, "Ready")?.status, "True");
  assert.equal(tokenHash(first.uid), token, "no new token");
  assert.equal(
    events(ns, "rb").filter((e) => e.reason === "RebuildStarted").length,
    1,
    "one rebuild",
  );
});

test("guestinfo: a rebuild sets fresh cloud-init data (new token, new instance-id) and clears it again", async () => {
  apply(virtualServer(ns, "gi", GI_HOST, GI_CLASS, LABELS));
  const firstFiles = await installFromGuestinfo(GI_VM, GI_HOST);
  const ready = await waitForCondition(ns, "gi", "Ready", "True", undefined, 180_000);
  const uid = ready.metadata.uid;
  const moRef = vmOf(ready).moRef;
  assert.equal(readGuestinfo(GI_VM).userData, "", "cleared after the install");
  const firstKey = firstFiles["/etc/mcollective/vsop/identity.pem"];

  kubectl([
    "-n",
    ns,
    "patch",
    "vsrv",
    "gi",
    "--type=merge",
    "-p",
    JSON.stringify({ spec: { rebuildRequestedAt: REQUEST } }),
  ]);
  const fresh = await waitFor(
    "fresh guestinfo data",
    () => {
      const gi = readGuestinfo(GI_VM);
      return gi.userData ? gi : undefined;
    },
    120_000,
  );
  assert.match(fresh.metadata["instance-id"] ?? "", new RegExp(`^${uid}-rebuild-\\d+$`));
  const files = await installFromGuestinfo(GI_VM, GI_HOST);
  assert.notEqual(files["/etc/mcollective/vsop/identity.pem"], firstKey, "a new identity key");
  const rebuilt = await waitFor(
    "gi rebuilt and Ready",
    () => {
      const vs = getVS(ns, "gi");
      return rebuildOf(vs).completedAt && cond(vs, "Ready")?.status === "True" ? vs : undefined;
    },
    180_000,
  );
  assert.equal(vmOf(rebuilt).moRef, moRef, "the same VM");
  assert.equal(findVMs(GI_VM).length, 1);
  assert.equal(readGuestinfo(GI_VM).userData, "", "cleared again after the reinstall");
});

// The VM lifecycle through the operator, every outcome checked with govc: create with NICs per
// VLAN and Boot-VLAN, install over the network, boot NIC disconnected (and kept so), resize,
// delete and retain.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  getVS,
  installVsop,
  kubectl,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc, nics, portGroupNames } from "../support/govc.js";
import { callBuilt, fetchKickstart, installToken } from "../support/installer.js";

const CLASS = "lifecycle-network";
const LABELS = { "vsop-test": "lifecycle" };
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("lifecycle");
  applyClass(CLASS, { hardware: { cpus: 2, memoryMiB: 1024 } });
  addDNS("10.12.30.60", "life-prod-1.example.test");
  addDNS("10.12.30.61", "keep-prod-1.example.test");
  op = startOperator("lifecycle", [
    "--label-selector",
    "vsop-test=lifecycle",
    "--resync-period",
    "2s",
  ]);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0);
});

test("network install: VM with service + boot NIC, kickstart, /built, boot NIC disconnected", async () => {
  apply(virtualServer(ns, "life", "life-prod-1.example.test", CLASS, LABELS));
  const created = await waitForCondition(ns, "life", "VMCreated", "True", undefined, 90_000);
  const [vm, ...others] = findVMs("life-prod-1");
  assert.ok(vm, "govc finds the VM");
  assert.equal(others.length, 0);
  assert.equal(vm.self.value, created.status?.vm && (created.status.vm as { moRef: string }).moRef);
  assert.equal(extraConfig(vm)["vsop.owner-uid"], created.metadata.uid);
  assert.equal(extraConfig(vm)["vsop.owner"], `${ns}/life`);
  const pg = portGroupNames();
  assert.deepEqual(
    nics(vm)
      .map((n) => pg[n.backing!.port!.portgroupKey])
      .sort(),
    ["Boot-VLAN", "VLAN-30"],
  );

  const installing = await waitForCondition(
    ns,
    "life",
    "Installed",
    "False",
    "WaitingForInstall",
    60_000,
  );
  assert.equal(installing.status?.phase, "Installing");
  assert.equal(findVMs("life-prod-1")[0]!.runtime.powerState, "poweredOn");

  const token = installToken(created.metadata.uid);
  const ks = await fetchKickstart(op.provisioningPort, token);
  assert.equal(ks.status, 200);
  assert.match(ks.body, /life-prod-1\.example\.test/);
  assert.match(ks.body, /10\.12\.30\.60/);
  assert.match(ks.body, /--nameserver=10\.12\.30\.4/);
  assert.match(ks.body, /10\.12\.30\.3/, "ntp-30");
  assert.match(ks.body, /10\.12\.30\.2:3128/, "proxy-30");
  assert.doesNotMatch(ks.body, /--gateway/);
  assert.equal(await callBuilt(`http://127.0.0.1:${op.provisioningPort}/built/${token}`), 204);
  assert.equal(await callBuilt(`http://127.0.0.1:${op.provisioningPort}/built/${token}`), 410);
  assert.equal((await fetchKickstart(op.provisioningPort, "x".repeat(43))).status, 404);

  await waitForCondition(ns, "life", "BootNICDisconnected", "True", undefined, 60_000);
  assert.equal(cond(getVS(ns, "life"), "Installed")?.status, "True");
  const boot = nics(findVMs("life-prod-1")[0]!).find(
    (n) => pg[n.backing!.port!.portgroupKey] === "Boot-VLAN",
  )!;
  assert.deepEqual(
    { connected: boot.connectable!.connected, startConnected: boot.connectable!.startConnected },
    { connected: false, startConnected: false },
  );
  assert.ok(!op.logs().includes(token), "the token is never logged");
});

test("drift: a reconnected boot NIC is disconnected again, with an Event", async () => {
  const pg = portGroupNames();
  const all = nics(findVMs("life-prod-1")[0]!);
  const index = all.findIndex((n) => pg[n.backing!.port!.portgroupKey] === "Boot-VLAN");
  const boot = all[index]!;
  govc(["device.connect", "-vm", "life-prod-1", `ethernet-${index}`]); // govc's name: the NIC's index
  await waitFor(
    "boot NIC disconnected again",
    () => {
      const n = nics(findVMs("life-prod-1")[0]!).find((d) => d.key === boot.key)!;
      return !n.connectable!.connected;
    },
    30_000,
  );
  await waitFor("BootNICReconnected event", () =>
    events(ns, "life").find((e) => e.reason === "BootNICReconnected" && e.type === "Warning"),
  );
});

test("resize: more CPUs are hot-added; less memory needs a power cycle and says so", async () => {
  kubectl(["-n", ns, "patch", "vsrv", "life", "--type=merge", "-p", '{"spec":{"cpus":4}}']);
  await waitFor(
    "4 CPUs in vSphere",
    () => findVMs("life-prod-1")[0]!.config.hardware.numCPU === 4,
    30_000,
  );
  kubectl(["-n", ns, "patch", "vsrv", "life", "--type=merge", "-p", '{"spec":{"memoryMiB":512}}']);
  const vs = await waitForCondition(
    ns,
    "life",
    "Ready",
    "False",
    "ResizeRequiresPowerCycle",
    30_000,
  );
  assert.match(cond(vs, "Ready")!.message, /power/);
  assert.equal(findVMs("life-prod-1")[0]!.config.hardware.memoryMB, 1024, "memory untouched");
  kubectl(["-n", ns, "patch", "vsrv", "life", "--type=merge", "-p", '{"spec":{"memoryMiB":1024}}']);
});

test("delete (Delete): the VM is powered off and destroyed, then the object is released", async () => {
  kubectl(["-n", ns, "delete", "vsrv", "life", "--wait=false"]);
  await waitFor("object gone", () => getVS(ns, "life") === undefined, 60_000);
  assert.equal(findVMs("life-prod-1").length, 0);
});

test("delete (Retain): the VM stays, running, without vsop's marker", async () => {
  apply(
    virtualServer(ns, "keep", "keep-prod-1.example.test", CLASS, LABELS, {
      deletionPolicy: "Retain",
    }),
  );
  await waitForCondition(ns, "keep", "VMCreated", "True", undefined, 90_000);
  kubectl(["-n", ns, "delete", "vsrv", "keep", "--wait=false"]);
  await waitFor("object gone", () => getVS(ns, "keep") === undefined, 60_000);
  const [vm] = findVMs("keep-prod-1");
  assert.ok(vm, "VM retained");
  assert.equal(extraConfig(vm)["vsop.owner-uid"] ?? "", "");
  assert.equal(extraConfig(vm)["vsop.owner"] ?? "", "");
  govc(["vm.destroy", "keep-prod-1"]);
});

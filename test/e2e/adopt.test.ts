// Adopting an existing VM through the operator, every outcome checked with govc: a VM made with
// `govc vm.create` (a NIC in VLAN-30, powered on) is adopted by name and ends Ready with Puppet
// applied by its mcollectived, carrying vsop's owner marker, with no VM created, nothing installed
// and its size kept; a second server asking for that same VM (now marked by the first) is refused
// and the VM's extraConfig stays as it was; a VM that does not exist is reported; and deleting an
// adopted server with deletionPolicy Retain gives the VM back running and unmarked.
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
  getVS,
  installVsop,
  kubectl,
  kubectlTry,
  nodeDown,
  nodeUp,
  removeDNSNames,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc, destroyVMs } from "../support/govc.js";

const CLASS = "adopt-guestinfo";
const LABELS = { "vsop-test": "adopt" };
const LEGACY = "adpt-legacy-1"; // the VM made by hand
const HOSTS = {
  owner: "adpt-prod-1.example.test", // adopts LEGACY
  rival: "adpt-prod-2.example.test", // asks for LEGACY too
  missing: "adpt-prod-3.example.test", // asks for a VM that does not exist
};
let ns: string;
let op: Operator;

const destroy = (name: string) => destroyVMs([name]);

before(() => {
  installVsop();
  // Leftovers of an interrupted run: the hand-made VM and any VM vsop would name after a host.
  for (const name of [LEGACY, ...Object.values(HOSTS).map((h) => h.split(".")[0]!)]) destroy(name);
  ns = createNamespace("adopt");
  applyClass(CLASS, { boot: { method: "guestinfo", installTimeout: "10m" } });
  addDNSRecords([
    ["10.12.30.244", HOSTS.owner],
    ["10.12.30.245", HOSTS.rival],
    ["10.12.30.246", HOSTS.missing],
  ]);
  // The hand-made server: a VM in VLAN-30, running, and its mcollectived (no identity key of
  // vsop's: vsop did not install it).
  govc([
    "vm.create",
    "-net",
    "VLAN-30",
    "-on=true",
    "-c",
    "1",
    "-m",
    "512",
    "-ds",
    "LocalDS_0",
    LEGACY,
  ]);
  nodeUp(HOSTS.owner);
  op = startOperator("adopt", ["--label-selector", "vsop-test=adopt", "--resync-period", "2s"]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  nodeDown(HOSTS.owner);
  removeDNSNames(Object.values(HOSTS));
  destroy(LEGACY);
});

const legacy = () => {
  const [vm, ...others] = findVMs(LEGACY);
  assert.ok(vm, `govc finds ${LEGACY}`);
  assert.equal(others.length, 0);
  return vm;
};

let adopted: VS;

test("a VM made with govc is adopted by name and ends Ready: marked, nothing created or installed", async () => {
  const made = legacy();
  apply(
    virtualServer(ns, "owner", HOSTS.owner, CLASS, LABELS, {
      adopt: { name: LEGACY },
      deletionPolicy: "Retain",
    }),
  );
  adopted = await waitForCondition(ns, "owner", "Ready", "True", undefined, 180_000);
  const vm = legacy();
  assert.equal(vm.self.value, made.self.value);
  assert.equal(extraConfig(vm)["vsop.owner-uid"], adopted.metadata.uid, "govc: vsop's marker");
  assert.equal(extraConfig(vm)["vsop.owner"], `${ns}/owner`);
  const status = adopted.status as Record<string, Record<string, string>>;
  assert.equal(status.vm!.moRef, made.self.value);
  assert.equal(status.vm!.name, LEGACY);
  assert.equal(status.adoption!.moRef, made.self.value);
  assert.ok(status.adoption!.completedAt);
  assert.equal(status.install!.method, "adopted");
  assert.equal(cond(adopted, "VMCreated")?.reason, "Adopted");
  assert.equal(cond(adopted, "Installed")?.reason, "Adopted");
  assert.equal(cond(adopted, "PuppetApplied")?.status, "True", "Puppet applied by its node");
  assert.equal(findVMs("adpt-prod-1").length, 0, "no VM created");
  assert.equal(vm.config.hardware.numCPU, 1, "its size kept (the class would give 2)");
  assert.equal(vm.runtime.powerState, "poweredOn");
  assert.equal(extraConfig(vm)["guestinfo.userdata"] ?? "", "", "no install data");
});

test("a VM marked by another VirtualServer is refused and its extraConfig left unchanged", async () => {
  assert.ok(adopted, "the first server adopted it");
  const marks = extraConfig(legacy());
  const moRef = (adopted.status!.vm as { moRef: string }).moRef;
  apply(virtualServer(ns, "rival", HOSTS.rival, CLASS, LABELS, { adopt: { moRef } }));
  const refused = await waitForCondition(ns, "rival", "Ready", "False", "AdoptionRefused", 60_000);
  const message = cond(refused, "Ready")!.message;
  assert.match(message, new RegExp(`VirtualServer ${ns}/owner`));
  assert.match(message, new RegExp(adopted.metadata.uid));
  assert.equal(refused.status?.phase, "Failed");
  assert.equal(cond(refused, "VMCreated")?.reason, "AdoptionRefused");
  await sleep(6000); // resyncs every 2 s: still nothing
  assert.deepEqual(extraConfig(legacy()), marks, "govc: the VM's extraConfig is unchanged");
  assert.equal(findVMs("adpt-prod-2").length, 0, "nothing created instead");
  assert.equal((getVS(ns, "rival")!.status as Record<string, unknown>).adoption, undefined);
  assert.ok(
    events(ns, "rival").some((e) => e.type === "Warning" && e.reason === "AdoptionRefused"),
    "a Warning Event",
  );
  assert.equal(cond(getVS(ns, "owner"), "Ready")?.status, "True", "the owner is untouched");
  // Deleting the refused server releases it without touching the VM.
  kubectl(["-n", ns, "delete", "vsrv", "rival", "--wait=false"]);
  await waitFor("rival gone", () => getVS(ns, "rival") === undefined, 60_000);
  assert.deepEqual(extraConfig(legacy()), marks);
});

test("a VM that does not exist: AdoptTargetNotFound, nothing created", async () => {
  apply(
    virtualServer(ns, "missing", HOSTS.missing, CLASS, LABELS, { adopt: { moRef: "vm-999999" } }),
  );
  const vs = await waitForCondition(ns, "missing", "Ready", "False", "AdoptTargetNotFound", 60_000);
  assert.match(cond(vs, "Ready")!.message, /vm-999999/);
  assert.equal(findVMs("adpt-prod-3").length, 0);
});

test("the API server refuses adopt with both or neither of moRef and name", () => {
  for (const adopt of [{ moRef: "vm-1", name: "x" }, {}]) {
    const bad = virtualServer(ns, "bad", HOSTS.missing, CLASS, LABELS, { adopt });
    const r = kubectlTry(["apply", "-f", "-"], JSON.stringify(bad));
    assert.equal(r.ok, false, JSON.stringify(adopt));
    assert.match(r.out, /exactly one of adopt\.moRef and adopt\.name/);
  }
});

test("deleting an adopted server with deletionPolicy Retain gives the VM back, running and unmarked", async () => {
  kubectl(["-n", ns, "delete", "vsrv", "owner", "--wait=false"]);
  await waitFor("owner gone", () => getVS(ns, "owner") === undefined, 60_000);
  const vm = legacy();
  assert.equal(extraConfig(vm)["vsop.owner-uid"] ?? "", "");
  assert.equal(extraConfig(vm)["vsop.owner"] ?? "", "");
  assert.equal(vm.runtime.powerState, "poweredOn");
});

// Ownership under copies: a VM cloned in vCenter carries the owner marker too. vsop must then
// change and delete neither (DuplicateOwnerMarker) until a person removes the copy.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc, destroyVMs } from "../support/govc.js";

const CLASS = "ownership-assumed";
const LABELS = { "vsop-test": "ownership" };
const HOST = "own-prod-1.example.test";
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("ownership");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.171", HOST);
  op = startOperator("ownership", [
    "--label-selector",
    "vsop-test=ownership",
    "--resync-period",
    "2s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  await op.stop();
  destroyVMs(["own-prod-1-copy"]);
});

test("a cloned VM with the owner marker: DuplicateOwnerMarker, neither resized nor destroyed", async () => {
  apply(virtualServer(ns, "own", HOST, CLASS, LABELS));
  const created = await waitForCondition(ns, "own", "VMCreated", "True", undefined, 120_000);
  const original = findVMs("own-prod-1")[0]!;
  assert.equal(
    (created.status?.vm as { instanceUUID?: string }).instanceUUID,
    original.config.instanceUuid,
    "the instanceUUID is recorded at creation",
  );

  govc(["vm.clone", "-vm", "own-prod-1", "-on=false", "own-prod-1-copy"]);
  // vCenter's CloneVM copies extraConfig; vcsim's does not, so put the marker where vCenter would.
  const marks = extraConfig(original);
  for (const key of ["vsop.owner-uid", "vsop.owner"])
    govc(["vm.change", "-vm", "own-prod-1-copy", "-e", `${key}=${marks[key]}`]);
  const copy = findVMs("own-prod-1-copy")[0]!;
  assert.equal(
    extraConfig(copy)["vsop.owner-uid"],
    created.metadata.uid,
    "the copy carries the marker",
  );

  const vs = await waitForCondition(ns, "own", "Ready", "False", "DuplicateOwnerMarker", 60_000);
  assert.match(cond(vs, "Ready")!.message, /own-prod-1-copy/);
  assert.match(cond(vs, "Ready")!.message, new RegExp(original.config.instanceUuid));

  // A size change is not applied to either copy.
  kubectl(["-n", ns, "patch", "vsrv", "own", "--type=merge", "-p", '{"spec":{"cpus":4}}']);
  await sleep(6000);
  assert.equal(findVMs("own-prod-1")[0]!.config.hardware.numCPU, original.config.hardware.numCPU);
  assert.equal(findVMs("own-prod-1-copy")[0]!.config.hardware.numCPU, copy.config.hardware.numCPU);

  // Deleting the object destroys neither while both carry the marker: the finalizer holds.
  kubectl(["-n", ns, "delete", "vsrv", "own", "--wait=false"]);
  await sleep(6000);
  assert.ok(getVS(ns, "own"), "the object is kept while the marker is ambiguous");
  assert.equal(findVMs("own-prod-1").length, 1);
  assert.equal(findVMs("own-prod-1-copy").length, 1);

  // A person removes the copy: deletion goes on and destroys vsop's own VM.
  govc(["vm.destroy", "own-prod-1-copy"]);
  await waitFor("the object released", () => !getVS(ns, "own"), 60_000);
  assert.equal(findVMs("own-prod-1").length, 0, "vsop's VM destroyed");
});

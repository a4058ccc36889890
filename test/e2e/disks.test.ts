// Data disks and the system disk's size on the stack's vcsim, every outcome checked with govc
// (vm.info: the VirtualDisk devices, their capacity and backing file, the vsop.disk.<name>
// markers): a disk added to a running VM and grown, a shrink refused with nothing changed, the
// system disk grown, a dropped disk kept and then removed once the class allows it, and no
// second disk after an operator restart.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { stackEnv } from "../support/env.js";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  metric,
  nodeDown,
  nodeUp,
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc, type GovcDevice, destroyVMs } from "../support/govc.js";

const CLASS = "disks-assumed";
const HOST = "dsk-prod-1.example.test";
const VM = "dsk-prod-1";
const LABELS = { "vsop-test": "disks" };
const CLASS_SPEC = { boot: { method: "guestinfo", assumeInstalled: true } };
const DS2 = "DisksDS";
const HOSTS = ["/DC0/host/DC0_C0/DC0_C0_H0", "/DC0/host/DC0_C0/DC0_C0_H1"];
const DATA = { name: "data", sizeGiB: 3 };
const LOGS = { name: "logs", sizeGiB: 1, datastore: DS2 };
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  destroyVMs([VM]); // a leftover of an interrupted run
  ns = createNamespace("disks");
  applyClass(CLASS, CLASS_SPEC);
  // A second datastore on both hosts of the cluster, for a disk placed apart from the VM.
  if (!govc(["ls", "/DC0/datastore"]).includes(DS2)) {
    const dir = path.join(stackEnv("VSOP_STACK_DIR"), "disks-ds2");
    mkdirSync(dir, { recursive: true });
    govc(["datastore.create", "-type", "local", "-name", DS2, "-path", dir, ...HOSTS]);
  }
  addDNS("10.12.30.157", HOST);
  nodeUp(HOST);
  op = startOperator("disks", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=disks",
    "--resync-period",
    "1s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
  removeDNS(HOST);
});

type Disk = GovcDevice & { capacityInKB: number; unitNumber: number; controllerKey: number };
const GiB = 1024 * 1024;

/** The VM's disks as govc sees them, by key order, and its extraConfig. */
function vmDisks() {
  const [vm] = findVMs(VM);
  assert.ok(vm, `govc: no VM ${VM}`);
  const disks = (vm.config.hardware.device as Disk[])
    .filter((d) => "capacityInKB" in d && d.backing?.fileName?.endsWith(".vmdk"))
    .sort((a, b) => a.key - b.key);
  return { vm, disks, extra: extraConfig(vm) };
}
const sizes = () => vmDisks().disks.map((d) => d.capacityInKB / GiB);

function patch(spec: Record<string, unknown>): void {
  kubectl(["-n", ns, "patch", "vsrv", "dsk", "--type=merge", "-p", JSON.stringify({ spec })]);
}

const statusDisks = (vs: VS | undefined) =>
  ((vs?.status?.vm as { disks?: Record<string, unknown>[] } | undefined)?.disks ?? []).map(
    (d) => `${d.name}=${d.sizeGiB}${d.retained ? " retained" : ""}`,
  );

/** Ready with this status and reason for the current generation, status.vm.disks as given. */
function waitReady(status: string, reason: string, disks?: string[], timeoutMs = 60_000) {
  return waitFor(
    `dsk Ready=${status} (${reason})${disks ? ` with disks ${disks.join(", ")}` : ""}`,
    () => {
      const vs = getVS(ns, "dsk");
      const ready = cond(vs, "Ready");
      return vs?.status?.observedGeneration === vs?.metadata.generation &&
        ready?.status === status &&
        ready.reason === reason &&
        (!disks || statusDisks(vs).join() === disks.join())
        ? vs
        : undefined;
    },
    timeoutMs,
  );
}

const reconfigs = async () =>
  metric((await scrape(op.metricsPort)).body, "vsop_vsphere_soap_requests_total", {
    method: "ReconfigVM_Task",
  });

test("a disk is added to the running VM and grown; govc shows it, status lists it", async () => {
  apply(virtualServer(ns, "dsk", HOST, CLASS, LABELS, { disks: [{ name: "data", sizeGiB: 2 }] }));
  const ready = await waitReady("True", "Provisioned", ["system=20", "data=2"], 120_000);
  const { vm, disks, extra } = vmDisks();
  assert.equal(vm.runtime.powerState, "poweredOn");
  assert.deepEqual(
    disks.map((d) => d.capacityInKB / GiB),
    [20, 2],
  );
  const data = disks[1]!;
  assert.equal(extra["vsop.disk.data"], `scsi0:${data.unitNumber}`, "named by its slot");
  assert.equal(data.controllerKey, disks[0]!.controllerKey, "on the system disk's controller");
  const recorded = (ready.status?.vm as { disks: Record<string, unknown>[] }).disks[1]!;
  assert.deepEqual(recorded, {
    name: "data",
    sizeGiB: 2,
    file: data.backing!.fileName,
    device: `scsi0:${data.unitNumber}`,
  });
  assert.match(data.backing!.fileName!, /^\[LocalDS_0\] dsk-prod-1\/dsk-prod-1_\d+\.vmdk$/);

  patch({ disks: [{ name: "data", sizeGiB: 3 }] });
  await waitReady("True", "Provisioned", ["system=20", "data=3"]);
  const grown = vmDisks();
  assert.deepEqual(
    grown.disks.map((d) => [d.key, d.capacityInKB / GiB, d.backing?.fileName]),
    [
      [disks[0]!.key, 20, disks[0]!.backing?.fileName],
      [data.key, 3, data.backing?.fileName],
    ],
    "the same disk, grown; no second one",
  );
  assert.equal(grown.vm.runtime.powerState, "poweredOn", "grown while it runs");
});

test("a disk on another datastore (disks[].datastore) has its file there", async () => {
  patch({ disks: [DATA, LOGS] });
  const ready = await waitReady("True", "Provisioned", ["system=20", "data=3", "logs=1"]);
  const { disks, extra } = vmDisks();
  assert.deepEqual(
    disks.map((d) => d.capacityInKB / GiB),
    [20, 3, 1],
  );
  assert.match(disks[2]!.backing!.fileName!, /^\[DisksDS\] dsk-prod-1\/dsk-prod-1(_\d+)?\.vmdk$/);
  assert.equal(extra["vsop.disk.logs"], `scsi0:${disks[2]!.unitNumber}`);
  const logs = (ready.status?.vm as { disks: { file?: string }[] }).disks[2]!;
  assert.equal(logs.file, disks[2]!.backing!.fileName);
});

test("a shrink is refused with DiskShrinkNotSupported and no disk changes", async () => {
  const before = await reconfigs();
  patch({ disks: [{ name: "data", sizeGiB: 1 }, LOGS, { name: "more", sizeGiB: 1 }] });
  const refused = await waitReady("False", "DiskShrinkNotSupported");
  assert.equal(refused.status?.phase, "Failed");
  assert.equal(cond(refused, "VMCreated")?.reason, "DiskShrinkNotSupported");
  assert.match(cond(refused, "Ready")!.message, /disk data has 3 GiB, 1 GiB asked/);
  // Resyncs every second: still nothing sent, nothing changed, the new disk not added either.
  await sleep(4000);
  assert.deepEqual(sizes(), [20, 3, 1], "govc: the same disks, the same sizes");
  assert.equal(await reconfigs(), before, "no ReconfigVM_Task sent");
  assert.deepEqual(statusDisks(getVS(ns, "dsk")), ["system=20", "data=3", "logs=1"]);

  patch({ disks: [DATA, LOGS] });
  await waitReady("True", "Provisioned", ["system=20", "data=3", "logs=1"]);
});

test("a disk on a datastore that does not exist: DatastoreNotFound, nothing added", async () => {
  patch({ disks: [DATA, LOGS, { name: "more", sizeGiB: 1, datastore: "NoSuchDS" }] });
  const refused = await waitReady("False", "DatastoreNotFound");
  assert.match(cond(refused, "VMCreated")!.message, /Datastore "NoSuchDS" for a new disk/);
  assert.deepEqual(sizes(), [20, 3, 1]);
  patch({ disks: [DATA, LOGS] });
  await waitReady("True", "Provisioned", ["system=20", "data=3", "logs=1"]);
});

test("the system disk grows with spec.diskGiB; a decrease is refused likewise", async () => {
  patch({ diskGiB: 21 });
  await waitReady("True", "Provisioned", ["system=21", "data=3", "logs=1"]);
  assert.deepEqual(sizes(), [21, 3, 1]);

  patch({ diskGiB: 20 });
  const refused = await waitReady("False", "DiskShrinkNotSupported");
  assert.match(cond(refused, "Ready")!.message, /disk system has 21 GiB, 20 GiB asked/);
  await sleep(2000);
  assert.deepEqual(sizes(), [21, 3, 1]);
  patch({ diskGiB: 21 });
  await waitReady("True", "Provisioned", ["system=21", "data=3", "logs=1"]);
});

test("an operator restart adds no second disk", async () => {
  assert.equal(await op.stop(), 0);
  op = startOperator("disks", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=disks",
    "--resync-period",
    "1s",
  ]);
  await waitFor(
    "the new operator's metrics",
    async () => (await scrape(op.metricsPort)).status === 200,
  );
  await sleep(4000);
  await waitReady("True", "Provisioned", ["system=21", "data=3", "logs=1"]);
  assert.equal(await reconfigs(), 0, "the new process sent no reconfiguration");
  assert.deepEqual(sizes(), [21, 3, 1]);
});

test("a dropped disk is kept and reported; removed (with its file) once the class allows it", async () => {
  patch({ disks: [LOGS] });
  const kept = await waitReady("True", "Provisioned", ["system=21", "logs=1", "data=3 retained"]);
  assert.match(
    cond(kept, "VMCreated")!.message,
    /Disk data no longer listed .*kept, as the class's hardware\.removeDisks is false/,
  );
  await sleep(2000);
  const { disks, extra } = vmDisks();
  assert.equal(disks.length, 3, "govc: still there");
  assert.ok(extra["vsop.disk.data"]);
  const file = disks[1]!.backing!.fileName!;
  const [ds, rel] = [/^\[([^\]]+)\]/.exec(file)![1]!, file.replace(/^\[[^\]]+\] /, "")];
  const [dir, base] = rel.split("/") as [string, string];
  assert.ok(govc(["datastore.ls", "-ds", ds, dir]).includes(base), "govc: the disk's file exists");

  applyClass(CLASS, { ...CLASS_SPEC, hardware: { removeDisks: true } });
  await waitReady("True", "Provisioned", ["system=21", "logs=1"]);
  const after = vmDisks();
  assert.deepEqual(
    after.disks.map((d) => d.capacityInKB / GiB),
    [21, 1],
  );
  assert.ok(after.extra["vsop.disk.logs"], "the listed disk stays");
  assert.equal(after.extra["vsop.disk.data"], undefined, "marker cleared");
  const listing = govc(["datastore.ls", "-ds", ds, dir]);
  assert.ok(!listing.includes(base), `govc: the disk's file is deleted (${listing.trim()})`);
});

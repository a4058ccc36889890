// Data disks and the system disk's size: the plan (a pure function of the VM as vCenter reports
// it), and the vm step carrying it out against an in-memory vCenter (test/support/fake-vsphere.ts),
// one ReconfigVM task per reconcile, never twice for one disk, never a shrink.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerSpec, VirtualServerStatus } from "../../src/api/types.js";
import { effectiveDisks } from "../../src/api/defaults.js";
import { StepError } from "../../src/errors.js";
import type { ReconcileContext, StepOutcome } from "../../src/reconcile/engine/context.js";
import { diskPlan, type DiskWants } from "../../src/reconcile/steps/disks.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { gibToKiB, systemDisk, type VMRecord } from "../../src/vsphere/vms.js";
import { diskRecords, freeScsiSlots, resizedDisk } from "../../src/vsphere/devices.js";
import type { NodeObject } from "../../src/vsphere/nodes.js";
import { PlacementNotFound } from "../../src/vsphere/vcenter.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const SYSTEM = { key: 2000, capacityKiB: gibToKiB(20), fileName: "[ds] w/w.vmdk", slot: "scsi0:0" };
const data = (unit: number, giB: number) => ({
  key: 2000 + unit,
  capacityKiB: gibToKiB(giB),
  fileName: `[ds] w/w_${unit}.vmdk`,
  slot: `scsi0:${unit}`,
});
type VM = Pick<VMRecord, "disks" | "extraConfig">;
const vmWith = (disks: VMRecord["disks"], markers: Record<string, string> = {}): VM => ({
  disks,
  extraConfig: Object.fromEntries(Object.entries(markers).map(([n, s]) => [`vsop.disk.${n}`, s])),
});
const want = (w: Partial<DiskWants> = {}): DiskWants => ({
  systemGiB: 20,
  systemExplicit: false,
  disks: [],
  removeDisks: false,
  installed: true,
  ...w,
});
const disk = (name: string, sizeGiB: number, datastore = "ds") => ({ name, sizeGiB, datastore });

interface Case {
  name: string;
  vm: VM;
  want: DiskWants;
  add?: string[];
  grow?: [number, number][];
  remove?: string[];
  shrinks?: string[];
  retained?: string[];
  status: string[];
}

const CASES: Case[] = [
  {
    name: "no-op: every disk as asked",
    vm: vmWith([SYSTEM, data(1, 10)], { data: "scsi0:1" }),
    want: want({ disks: [disk("data", 10)] }),
    status: ["system=20", "data=10"],
  },
  {
    name: "add: a listed disk the VM lacks",
    vm: vmWith([SYSTEM]),
    want: want({ disks: [disk("data", 10), disk("logs", 5, "ds2")] }),
    add: ["data:10:ds", "logs:5:ds2"],
    status: ["system=20"],
  },
  {
    name: "add: not before the install finished (no installer partitions it)",
    vm: vmWith([SYSTEM]),
    want: want({ disks: [disk("data", 10)], installed: false }),
    status: ["system=20"],
  },
  {
    name: "add: a marker whose disk is gone (removed in vCenter) adds it again",
    vm: vmWith([SYSTEM], { data: "scsi0:1" }),
    want: want({ disks: [disk("data", 10)] }),
    add: ["data:10:ds"],
    status: ["system=20"],
  },
  {
    name: "grow: a larger size",
    vm: vmWith([SYSTEM, data(1, 10)], { data: "scsi0:1" }),
    want: want({ disks: [disk("data", 15)] }),
    grow: [[2001, 15]],
    status: ["system=20", "data=10"],
  },
  {
    name: "grow: the system disk (spec.diskGiB or the class's)",
    vm: vmWith([SYSTEM]),
    want: want({ systemGiB: 30 }),
    grow: [[2000, 30]],
    status: ["system=20"],
  },
  {
    name: "shrink refused: nothing changes, not even the other disks",
    vm: vmWith([SYSTEM, data(1, 10)], { data: "scsi0:1" }),
    want: want({ systemGiB: 40, disks: [disk("data", 5), disk("new", 1)] }),
    shrinks: ["data"],
    status: ["system=20", "data=10"],
  },
  {
    name: "shrink refused: spec.diskGiB below the system disk",
    vm: vmWith([SYSTEM]),
    want: want({ systemGiB: 10, systemExplicit: true }),
    shrinks: ["system"],
    status: ["system=20"],
  },
  {
    name: "no shrink: a class default below a larger (template's) system disk is no request",
    vm: vmWith([SYSTEM]),
    want: want({ systemGiB: 10 }),
    status: ["system=20"],
  },
  {
    name: "removed, not allowed (default): kept and reported",
    vm: vmWith([SYSTEM, data(1, 10), data(2, 3)], { data: "scsi0:1", logs: "scsi0:2" }),
    want: want({ disks: [disk("data", 10)] }),
    retained: ["logs"],
    status: ["system=20", "data=10", "logs=3 (retained)"],
  },
  {
    name: "removed, allowed by hardware.removeDisks",
    vm: vmWith([SYSTEM, data(1, 10), data(2, 3)], { data: "scsi0:1", logs: "scsi0:2" }),
    want: want({ disks: [disk("data", 10)], removeDisks: true }),
    remove: ["logs"],
    status: ["system=20", "data=10"],
  },
  {
    name: "a disk vsop did not add (no marker) is neither system disk nor touched",
    vm: vmWith([data(3, 1), SYSTEM], {}),
    want: want({ removeDisks: true }),
    status: ["system=20"],
  },
];

for (const c of CASES) {
  test(`disk plan: ${c.name}`, () => {
    const plan = diskPlan(c.vm, c.want);
    assert.deepEqual(
      plan.changes.add.map((a) => `${a.name}:${a.sizeGiB}:${a.datastore}`),
      c.add ?? [],
      "add",
    );
    assert.deepEqual(
      plan.changes.grow.map((g) => [g.key, g.sizeGiB]),
      c.grow ?? [],
      "grow",
    );
    assert.deepEqual(plan.changes.remove, c.remove ?? [], "remove");
    assert.deepEqual(
      plan.shrinks.map((s) => s.name),
      c.shrinks ?? [],
      "shrinks",
    );
    assert.deepEqual(plan.retained, c.retained ?? [], "retained");
    assert.deepEqual(
      plan.status.map((s) => `${s.name}=${s.sizeGiB}${s.retained ? " (retained)" : ""}`),
      c.status,
      "status",
    );
  });
}

test("system disk: the lowest-keyed unmarked disk, wherever the device list puts it", () => {
  // vcsim moves an edited device to the end of the list.
  const vm = vmWith([data(1, 10), data(2, 3), SYSTEM], { data: "scsi0:1" });
  assert.equal(systemDisk(vm)?.key, 2000);
  assert.equal(systemDisk(vmWith([])), undefined);
});

test("effective disks: the class's list, the server's over it by name, datastore defaulted", () => {
  const vs = {
    spec: {
      disks: [
        { name: "data", sizeGiB: 50 },
        { name: "logs", sizeGiB: 5 },
      ],
    },
  } as unknown as Parameters<typeof effectiveDisks>[0];
  const cls = {
    placement: { datacenter: "DC0", datastore: "ds" },
    hardware: {
      disks: [
        { name: "data", sizeGiB: 10, datastore: "fast" },
        { name: "swap", sizeGiB: 2 },
      ],
    },
  } as unknown as Parameters<typeof effectiveDisks>[1];
  assert.deepEqual(effectiveDisks(vs, cls), [
    { name: "data", sizeGiB: 50, datastore: "fast" },
    { name: "swap", sizeGiB: 2, datastore: "ds" },
    { name: "logs", sizeGiB: 5, datastore: "ds" },
  ]);
});

// --- the vm step ---------------------------------------------------------------------------------

const CLASS = {
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "guestinfo", assumeInstalled: true },
  hardware: { cpus: 2, memoryMiB: 2048 },
};
const INSTALLED: VirtualServerStatus = {
  install: { startedAt: "2026-01-01T00:00:00Z", completedAt: "2026-01-01T00:01:00Z" },
};

async function reconcile(
  vc: FakeVSphere,
  status: VirtualServerStatus,
  spec: Partial<VirtualServerSpec>,
  classSpec: Record<string, unknown> = CLASS,
): Promise<{ out: StepOutcome; ctx: ReconcileContext }> {
  const ctx = stepContext(structuredClone(status), classSpec);
  Object.assign(ctx.vs.spec, spec);
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  return { out: await vmStep({ get: async () => vc }).run(ctx), ctx };
}

const serverVM = (vc: FakeVSphere) =>
  vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    extraConfig: { "vsop.owner-uid": "u", "vsop.owner": "n/w" },
    disks: [{ ...SYSTEM, fileName: "[ds] web-prod-1/web-prod-1.vmdk" }],
  });
const sizes = (vc: FakeVSphere, ref: string) =>
  vc.get(ref)!.disks.map((d) => `${d.slot}=${d.capacityKiB / 1024 / 1024}`);

test("vm step: a disk added to a running VM, then grown; one task each, status lists it", async () => {
  const vc = new FakeVSphere();
  const vm = serverVM(vc);
  let r = await reconcile(vc, INSTALLED, { disks: [{ name: "data", sizeGiB: 10 }] });
  assert.equal(r.out.done, false);
  assert.equal(r.ctx.status.vm?.task?.operation, "ConfigureDisks");
  assert.match((r.out as { message: string }).message, /adding disk data \(10 GiB on ds\)/);
  // While the task runs, nothing else is started.
  r = await reconcile(vc, r.ctx.status, { disks: [{ name: "data", sizeGiB: 10 }] });
  assert.deepEqual(vc.started, [`ConfigureDisks ${vm.moRef}`]);
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, { disks: [{ name: "data", sizeGiB: 10 }] });
  assert.equal(r.out.done, true);
  assert.deepEqual(sizes(vc, vm.moRef), ["scsi0:0=20", "scsi0:1=10"]);
  assert.deepEqual(r.ctx.status.vm?.disks, [
    {
      name: "system",
      sizeGiB: 20,
      file: "[ds] web-prod-1/web-prod-1.vmdk",
      device: "scsi0:0",
    },
    { name: "data", sizeGiB: 10, file: "[ds] web-prod-1/web-prod-1_1.vmdk", device: "scsi0:1" },
  ]);

  r = await reconcile(vc, r.ctx.status, { disks: [{ name: "data", sizeGiB: 25 }], diskGiB: 30 });
  assert.equal(r.ctx.status.vm?.task?.operation, "ConfigureDisks");
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, { disks: [{ name: "data", sizeGiB: 25 }], diskGiB: 30 });
  assert.equal(r.out.done, true);
  assert.deepEqual(sizes(vc, vm.moRef), ["scsi0:0=30", "scsi0:1=25"]);
  assert.equal(vc.started.length, 2, "one task for both grows");
});

test("vm step: a restart that lost the task's status record adds no second disk", async () => {
  const vc = new FakeVSphere();
  const vm = serverVM(vc);
  const spec = { disks: [{ name: "data", sizeGiB: 10 }] };
  const r = await reconcile(vc, INSTALLED, spec);
  const task = r.ctx.status.vm!.task!;
  vc.endAll();
  // A new process: its task table is empty and the status write of the task never happened.
  vc.forget("n/w", task.moRef);
  const again = await reconcile(vc, INSTALLED, spec);
  assert.equal(again.out.done, true);
  assert.equal(vc.started.length, 1);
  assert.equal(vc.get(vm.moRef)!.disks.length, 2);
});

test("vm step: a shrink is refused with DiskShrinkNotSupported and nothing is started", async () => {
  const vc = new FakeVSphere();
  const vm = serverVM(vc);
  let r = await reconcile(vc, INSTALLED, { disks: [{ name: "data", sizeGiB: 10 }] });
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, { disks: [{ name: "data", sizeGiB: 10 }] });
  assert.equal(r.out.done, true);
  const ctx = stepContext(structuredClone(r.ctx.status), CLASS);
  Object.assign(ctx.vs.spec, {
    disks: [
      { name: "data", sizeGiB: 4 },
      { name: "more", sizeGiB: 1 },
    ],
  });
  ctx.resolved = { address: "10.12.30.5", vlan: 30, portGroup: "VLAN-30" } as never;
  await assert.rejects(
    vmStep({ get: async () => vc }).run(ctx),
    (e: unknown) =>
      e instanceof StepError &&
      e.reason === "DiskShrinkNotSupported" &&
      e.options.condition === "VMCreated" &&
      /disk data has 10 GiB, 4 GiB asked/.test(e.message),
  );
  assert.equal(vc.started.length, 1, "no task after the add");
  assert.deepEqual(sizes(vc, vm.moRef), ["scsi0:0=20", "scsi0:1=10"]);
  assert.deepEqual(
    ctx.status.vm?.disks?.map((d) => `${d.name}=${d.sizeGiB}`),
    ["system=20", "data=10"],
    "status shows the disks as they are",
  );
});

test("vm step: a dropped disk is kept and reported (removeDisks false), removed when allowed", async () => {
  const vc = new FakeVSphere();
  const vm = serverVM(vc);
  let r = await reconcile(vc, INSTALLED, { disks: [{ name: "logs", sizeGiB: 3 }] });
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, {});
  assert.equal(r.out.done, true);
  assert.equal(vc.started.length, 1);
  assert.deepEqual(r.ctx.status.vm?.disks?.[1], {
    name: "logs",
    sizeGiB: 3,
    file: "[ds] web-prod-1/web-prod-1_1.vmdk",
    device: "scsi0:1",
    retained: true,
  });
  assert.match(
    r.ctx.status.conditions!.find((c) => c.type === "VMCreated")!.message,
    /Disk logs no longer listed .*kept, as the class's hardware\.removeDisks is false/,
  );
  const allow = { ...CLASS, hardware: { ...CLASS.hardware, removeDisks: true } };
  r = await reconcile(vc, r.ctx.status, {}, allow);
  assert.equal(r.ctx.status.vm?.task?.operation, "ConfigureDisks");
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, {}, allow);
  assert.equal(r.out.done, true);
  assert.deepEqual(sizes(vc, vm.moRef), ["scsi0:0=20"]);
  assert.equal(vc.get(vm.moRef)!.extraConfig["vsop.disk.logs"], undefined, "marker cleared");
  assert.deepEqual(
    r.ctx.status.vm?.disks?.map((d) => d.name),
    ["system"],
  );
});

// --- the vSphere device specs --------------------------------------------------------------------

const DEVICES: NodeObject[] = [
  { _type: "ParaVirtualSCSIController", key: "1000", busNumber: "0", scsiCtlrUnitNumber: "7" },
  { _type: "VirtualLsiLogicController", key: "1001", busNumber: "1" },
  { _type: "VirtualIDEController", key: "200", busNumber: "0" },
  {
    _type: "VirtualDisk",
    key: "2000",
    backing: { _type: "VirtualDiskFlatVer2BackingInfo", fileName: "[ds] w/w.vmdk" },
    controllerKey: "1000",
    unitNumber: "0",
    capacityInKB: "1048576",
    capacityInBytes: "1073741824",
    storageIOAllocation: { limit: "-1" },
  },
  {
    _type: "VirtualDisk",
    key: "2016",
    backing: { _type: "VirtualDiskFlatVer2BackingInfo", fileName: "[ds] w/w_1.vmdk" },
    controllerKey: "1001",
    unitNumber: "3",
    capacityInKB: "2048",
  },
  { _type: "VirtualCdrom", key: "3000", controllerKey: "200", unitNumber: "1" },
];

test("disk records name each disk's slot as the .vmx does (scsi<bus>:<unit>)", () => {
  assert.deepEqual(
    diskRecords(DEVICES).map((d) => [d.key, d.slot]),
    [
      [2000, "scsi0:0"],
      [2016, "scsi1:3"],
    ],
  );
});

test("free SCSI slots: the system disk's controller, its used units and unit 7 left out", () => {
  const free = freeScsiSlots(DEVICES, 2000)!;
  assert.equal(free.controllerKey, 1000);
  assert.deepEqual(free.units, [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.equal(free.slot(1), "scsi0:1");
  assert.equal(freeScsiSlots(DEVICES, 2016)!.controllerKey, 1001);
  assert.equal(
    freeScsiSlots(
      DEVICES.filter(
        (d) => !String(d._type).includes("SCSI") && !String(d._type).includes("LsiLogic"),
      ),
    ),
    undefined,
  );
});

test("a grown disk keeps every field and its order; both capacities agree", () => {
  const grown = resizedDisk(DEVICES[3]!, 2 * 1048576);
  assert.deepEqual(Object.keys(grown), Object.keys(DEVICES[3]!));
  assert.equal(grown.capacityInKB, "2097152");
  assert.equal(grown.capacityInBytes, String(2097152 * 1024));
  assert.equal(DEVICES[3]!.capacityInKB, "1048576", "the cached device is not changed");
  // A device without capacityInBytes gets it right after capacityInKB (WSDL order).
  const other = resizedDisk(DEVICES[4]!, 4096);
  assert.deepEqual(Object.keys(other).slice(-2), ["capacityInKB", "capacityInBytes"]);
});

test("vm step: a new disk's missing datastore is DatastoreNotFound naming that datastore", async () => {
  const vc = new FakeVSphere();
  serverVM(vc);
  vc.startConfigureDisks = async () => {
    throw new PlacementNotFound("datastore", "NoSuchDS", "DC0");
  };
  await assert.rejects(
    reconcile(vc, INSTALLED, { disks: [{ name: "data", sizeGiB: 1, datastore: "NoSuchDS" }] }),
    (e: unknown) =>
      e instanceof StepError &&
      e.reason === "DatastoreNotFound" &&
      e.options.condition === "VMCreated" &&
      /Datastore "NoSuchDS" for a new disk .*spec\.disks/.test(e.message),
  );
});

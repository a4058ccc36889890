// boot.installerISO against an in-memory vCenter: before a VM is created the vendor image must
// exist and carry an El Torito entry for the class's firmware (read a sector at a time, never
// the whole image); after the install both CD-ROMs are emptied and only the server's own ISO is
// deleted, the vendor image never.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import type { ReconcileContext, Step, StepOutcome } from "../../src/reconcile/engine/context.js";
import type { InstallDeps } from "../../src/reconcile/boot/install-data.js";
import { handoffStep } from "../../src/reconcile/steps/install-steps.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { SECTOR } from "../../src/provision/eltorito.js";
import { isoDriveChanges } from "../../src/vsphere/devices.js";
import type { NodeObject } from "../../src/vsphere/nodes.js";
import { taskInFlight } from "../../src/reconcile/engine/vsphere-task.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const IMAGE = "[isos] vendor/installer.iso";
const classSpec = (firmware: "bios" | "efi", installerISO = IMAGE) => ({
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "iso", installerISO },
  hardware: { cpus: 2, memoryMiB: 2048, firmware },
});

/** An image of 40 sectors whose boot catalog (sector 20) has entries for `platforms`. */
function image(platforms: number[], opts: { elTorito?: boolean } = {}): Buffer {
  const b = Buffer.alloc(40 * SECTOR);
  if (opts.elTorito === false) return b;
  const rec = 17 * SECTOR;
  b.write("CD001", rec + 1, "ascii");
  b[rec + 6] = 1;
  b.write("EL TORITO SPECIFICATION", rec + 7, "ascii");
  b.writeUInt32LE(20, rec + 0x47);
  const cat = 20 * SECTOR;
  b[cat] = 0x01;
  b[cat + 1] = platforms[0] ?? 0;
  b[cat + 30] = 0x55;
  b[cat + 31] = 0xaa;
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + b.readUInt16LE(cat + i)) & 0xffff;
  b.writeUInt16LE((0x10000 - sum) & 0xffff, cat + 28);
  b[cat + 32] = platforms.length ? 0x88 : 0;
  platforms.slice(1).forEach((p, i) => {
    const h = cat + 64 + i * 64;
    b[h] = i === platforms.length - 2 ? 0x91 : 0x90;
    b[h + 1] = p;
    b.writeUInt16LE(1, h + 2);
    b[h + 32] = 0x88;
  });
  return b;
}

/** One reconcile as the engine runs it: the task in flight first (ctx.finished), then the step. */
async function reconcile(
  step: Step,
  status: VirtualServerStatus,
  cls: Record<string, unknown>,
  vc?: FakeVSphere,
) {
  const ctx = stepContext(structuredClone(status), cls);
  const busy = vc && (await taskInFlight(ctx, vc));
  if (busy) return { out: busy, ctx };
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  const out: StepOutcome = await step.run(ctx);
  return { out, ctx };
}

/** Reconciles the vm step until it starts CreateVM or throws. */
async function untilCreate(vc: FakeVSphere, cls: Record<string, unknown>) {
  const step = vmStep({ get: async () => vc });
  let status: VirtualServerStatus = {};
  for (let i = 0; i < 3 && !vc.started.length; i++)
    status = (await reconcile(step, status, cls)).ctx.status;
}

for (const [what, firmware, platforms] of [
  ["hybrid image, efi", "efi", [0x00, 0xef]],
  ["hybrid image, bios", "bios", [0x00, 0xef]],
  ["EFI-only image, efi", "efi", [0xef]],
] as const) {
  test(`vm step: ${what} → the VM is created`, async () => {
    const vc = new FakeVSphere();
    vc.images.set(IMAGE, image([...platforms]));
    await untilCreate(vc, classSpec(firmware));
    assert.deepEqual(vc.started, ["CreateVM web-prod-1"]);
    // The boot record and the catalog, a sector each.
    assert.ok(vc.reads.length >= 2);
    for (const r of vc.reads)
      assert.match(r, /^\[isos\] vendor\/installer\.iso@(34816|40960)\+2048$/);
  });
}

for (const [what, cls, img, reason, message] of [
  [
    "BIOS-only image, efi firmware",
    classSpec("efi"),
    image([0x00]),
    "InstallerISONotBootable",
    /cannot boot a VM with efi firmware: its boot catalog has entries for x86 BIOS only; nothing was created.*EFI/,
  ],
  [
    "EFI-only image, bios firmware",
    classSpec("bios"),
    image([0xef]),
    "InstallerISONotBootable",
    /bios firmware: its boot catalog has entries for EFI only/,
  ],
  [
    "not an El Torito image",
    classSpec("efi"),
    image([], { elTorito: false }),
    "InstallerISONotBootable",
    /has no El Torito boot record/,
  ],
  [
    "no bootable entry",
    classSpec("bios"),
    image([]),
    "InstallerISONotBootable",
    /has no bootable entry/,
  ],
  [
    "a file shorter than the boot record",
    classSpec("bios"),
    Buffer.alloc(1000),
    "InstallerISONotBootable",
    /no El Torito boot record/,
  ],
  [
    "no such file",
    classSpec("efi", "[isos] vendor/missing.iso"),
    undefined,
    "InstallerISONotFound",
    /\[isos\] vendor\/missing\.iso \(boot\.installerISO\) does not exist in datacenter DC0; nothing was created/,
  ],
] as const) {
  test(`vm step: ${what} → ${reason}, nothing created`, async () => {
    const vc = new FakeVSphere();
    if (img) vc.images.set(IMAGE, img);
    await assert.rejects(
      untilCreate(vc, cls),
      (e: unknown) =>
        e instanceof StepError &&
        e.reason === reason &&
        e.options.condition === "VMCreated" &&
        message.test(e.message),
    );
    assert.deepEqual(vc.started, []);
  });
}

test("vm step: cidata iso (no installerISO) reads nothing", async () => {
  const vc = new FakeVSphere();
  await untilCreate(vc, { ...classSpec("efi"), boot: { method: "iso" } });
  assert.deepEqual(vc.started, ["CreateVM web-prod-1"]);
  assert.deepEqual(vc.reads, []);
});

test("handoff: both CD-ROMs emptied, the server's ISO deleted, the vendor image never", async () => {
  const vc = new FakeVSphere();
  const own = "[ds] vsop/web-prod-1-u.iso";
  vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    cdroms: [
      { key: 3000, isoPath: IMAGE, connected: true, startConnected: true },
      { key: 3001, isoPath: own, connected: true, startConnected: true },
    ],
  });
  vc.files.add("vsop/web-prod-1-u.iso");
  const deps = { pool: { get: async () => vc } } as unknown as InstallDeps;
  const step = handoffStep(deps, async () => undefined);
  const cls = classSpec("efi");
  let status: VirtualServerStatus = {
    install: { method: "iso", completedAt: "x", iso: own, installerISO: IMAGE },
  };
  let r = await reconcile(step, status, cls, vc);
  assert.equal(r.ctx.status.vm?.task?.operation, "DetachISO");
  assert.equal(r.ctx.status.install?.installerISO, IMAGE, "recorded until it is out");
  vc.endAll();
  r = await reconcile(step, r.ctx.status, cls, vc);
  assert.equal(r.ctx.status.install?.installerISO, undefined);
  assert.equal(r.ctx.status.vm?.task?.operation, "DeleteISO");
  vc.endAll();
  status = r.ctx.status;
  r = await reconcile(step, status, cls, vc);
  assert.equal(r.out.done, true);
  assert.equal(r.ctx.status.install?.iso, undefined);
  assert.deepEqual(vc.started, ["DetachISO vm-1", "DeleteFile vsop/web-prod-1-u.iso"]);
  assert.deepEqual(vc.findByOwnerUID("u")!.cdroms, []);
  assert.equal(vc.files.size, 0);
});

// --- the CD-ROM changes (devices.ts) ------------------------------------------------------------

const ide = (key: number, bus: number): NodeObject => ({
  _type: "VirtualIDEController",
  key: String(key),
  busNumber: String(bus),
});
const cdrom = (
  key: number,
  ctrl: number,
  unit: number,
  iso?: string,
  connected = true,
): NodeObject => ({
  _type: "VirtualCdrom",
  key: String(key),
  backing: (iso
    ? { _type: "VirtualCdromIsoBackingInfo", fileName: iso }
    : { _type: "VirtualCdromRemotePassthroughBackingInfo", deviceName: "" }) as NodeObject,
  connectable: {
    startConnected: String(!!iso),
    allowGuestControl: "true",
    connected: String(!!iso && connected),
  },
  controllerKey: String(ctrl),
  unitNumber: String(unit),
});
const OWN = "[ds] vsop/web-prod-1-u.iso";
const summary = (changes: NodeObject[] | undefined) =>
  changes?.map((c) => {
    const d = c.device as NodeObject;
    const b = d.backing as NodeObject;
    return `${String(c.operation)} ${String(d.key)}@${String(d.controllerKey)}:${String(d.unitNumber)} ${String(b.fileName)}`;
  });

test("isoDriveChanges: the installer image in the first drive by IDE bus and unit, adding what is missing", () => {
  const ctrls = [ide(200, 0), ide(201, 1)];
  const cases: [string, NodeObject[], boolean, string[] | undefined][] = [
    [
      "a VM without drives: two added in distinct slots",
      [...ctrls],
      false,
      [`add -1@200:0 ${IMAGE}`, `add -2@200:1 ${OWN}`],
    ],
    [
      "one empty drive (finishVM's): it takes the image, a second is added",
      [...ctrls, cdrom(3000, 200, 0)],
      false,
      [`edit 3000@200:0 ${IMAGE}`, `add -2@200:1 ${OWN}`],
    ],
    [
      "two empty drives, listed out of order: the one on bus 0 gets the image",
      [...ctrls, cdrom(3000, 201, 0), cdrom(3001, 200, 1)],
      true,
      [`edit 3001@200:1 ${IMAGE}`, `edit 3000@201:0 ${OWN}`],
    ],
    [
      "both in place and connected: nothing",
      [...ctrls, cdrom(3000, 200, 0, IMAGE), cdrom(3001, 200, 1, OWN)],
      true,
      [],
    ],
    [
      "in place but the second disconnected on a running VM: only that one",
      [...ctrls, cdrom(3000, 200, 0, IMAGE), cdrom(3001, 200, 1, OWN, false)],
      true,
      [`edit 3001@200:1 ${OWN}`],
    ],
    [
      "swapped: both edited",
      [...ctrls, cdrom(3000, 200, 0, OWN), cdrom(3001, 200, 1, IMAGE)],
      false,
      [`edit 3000@200:0 ${IMAGE}`, `edit 3001@200:1 ${OWN}`],
    ],
    [
      "one free slot left for two missing drives: no change at all",
      [ide(200, 0), { _type: "VirtualDisk", key: "2000", controllerKey: "200", unitNumber: "0" }],
      false,
      undefined,
    ],
  ];
  for (const [what, devices, on, want] of cases) {
    const before = JSON.stringify(devices);
    assert.deepEqual(summary(isoDriveChanges(devices, [IMAGE, OWN], on)), want, what);
    assert.equal(JSON.stringify(devices), before, `${what}: the devices are not changed`);
  }
  // Connection flags follow the power state.
  const [c] = isoDriveChanges([...ctrls, cdrom(3000, 200, 0)], [OWN], true)!;
  assert.deepEqual((c!.device as NodeObject).connectable, {
    startConnected: "true",
    allowGuestControl: "true",
    connected: "true",
  });
});

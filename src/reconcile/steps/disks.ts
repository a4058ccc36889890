// The VM's disks as the spec asks (called by the vm step): data disks (spec.disks over the class's
// hardware.disks) are added once the server is installed, so no installer partitions them;
// disks, the system disk too (spec.diskGiB), are grown when a size increases and never shrunk;
// a data disk dropped from the lists is removed only when the class's hardware.removeDisks
// allows it, else kept and reported. vsop knows its disks by the extraConfig marker
// vsop.disk.<name> = slot that the same task sets when it adds one, so a retry never adds twice.
import type { EffectiveHardware } from "../../api/defaults.js";
import { SYSTEM_DISK, type DiskStatus } from "../../api/types.js";
import { StepError } from "../../errors.js";
import { PlacementNotFound } from "../../vsphere/vcenter.js";
import {
  diskMarkers,
  gibToKiB,
  systemDisk,
  type DiskChanges,
  type VMRecord,
} from "../../vsphere/vms.js";
import type { ReconcileContext, StepOutcome } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { startTask } from "../engine/vsphere-task.js";

export interface DiskWants {
  /** The system disk's size (spec.diskGiB, else the class's). */
  systemGiB: number;
  /**
   * Whether systemGiB is the server's own spec.diskGiB: only then is a smaller system disk a
   * shrink request (a template's disk may well be larger than the class's default).
   */
  systemExplicit: boolean;
  disks: EffectiveHardware["disks"];
  removeDisks: boolean;
  /** Data disks are added only once the server is installed. */
  installed: boolean;
}

export interface DiskPlan {
  /** The VM's disks now (system disk first, then data disks in list order), for status.vm.disks. */
  status: DiskStatus[];
  /** Sizes asked below what a disk has: refused, and then no disk changes at all. */
  shrinks: { name: string; haveGiB: number; wantGiB: number }[];
  changes: DiskChanges;
  /** Data disks dropped from the lists and kept (hardware.removeDisks false). */
  retained: string[];
}

const gib = (kib: number) => Math.round((kib / 1024 / 1024) * 100) / 100;

/** What to do about the VM's disks, from the VM as vCenter reports it. */
export function diskPlan(vm: Pick<VMRecord, "disks" | "extraConfig">, want: DiskWants): DiskPlan {
  const markers = diskMarkers(vm);
  const present = new Map(
    [...markers]
      .map(([name, slot]) => [name, vm.disks.find((d) => d.slot === slot)] as const)
      .filter((e): e is [string, NonNullable<(typeof e)[1]>] => e[1] !== undefined),
  );
  const plan: DiskPlan = {
    status: [],
    shrinks: [],
    changes: { add: [], grow: [], remove: [] },
    retained: [],
  };
  const entry = (name: string, d: VMRecord["disks"][number], retained?: boolean): DiskStatus => ({
    name,
    sizeGiB: gib(d.capacityKiB),
    file: d.fileName,
    device: d.slot,
    ...(retained ? { retained } : {}),
  });

  const sys = systemDisk(vm);
  if (sys) {
    plan.status.push(entry(SYSTEM_DISK, sys));
    const kib = gibToKiB(want.systemGiB);
    if (kib > sys.capacityKiB)
      plan.changes.grow.push({ key: sys.key, name: SYSTEM_DISK, sizeGiB: want.systemGiB });
    else if (kib < sys.capacityKiB && want.systemExplicit)
      plan.shrinks.push({
        name: SYSTEM_DISK,
        haveGiB: gib(sys.capacityKiB),
        wantGiB: want.systemGiB,
      });
  }
  for (const w of want.disks) {
    const d = present.get(w.name);
    if (!d) {
      if (want.installed) plan.changes.add.push(w);
      continue;
    }
    plan.status.push(entry(w.name, d));
    const kib = gibToKiB(w.sizeGiB);
    if (kib > d.capacityKiB)
      plan.changes.grow.push({ key: d.key, name: w.name, sizeGiB: w.sizeGiB });
    else if (kib < d.capacityKiB)
      plan.shrinks.push({ name: w.name, haveGiB: gib(d.capacityKiB), wantGiB: w.sizeGiB });
  }
  const listed = new Set(want.disks.map((w) => w.name));
  for (const [name, d] of [...present].sort(([a], [b]) => a.localeCompare(b))) {
    if (listed.has(name)) continue;
    if (want.removeDisks) plan.changes.remove.push(name);
    else {
      plan.retained.push(name);
      plan.status.push(entry(name, d, true));
    }
  }
  if (plan.shrinks.length) plan.changes = { add: [], grow: [], remove: [] };
  return plan;
}

const describe = (c: DiskChanges) =>
  [
    ...c.add.map((a) => `adding disk ${a.name} (${a.sizeGiB} GiB on ${a.datastore})`),
    ...c.grow.map((g) => `growing disk ${g.name} to ${g.sizeGiB} GiB`),
    ...c.remove.map((r) => `removing disk ${r} (hardware.removeDisks)`),
  ].join(", ");

/**
 * Records the VM's disks in status and starts the one reconfiguration they need, if any (the
 * started task's wait); refuses a shrink with DiskShrinkNotSupported, changing nothing.
 */
export async function reconcileDisks(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  hw: EffectiveHardware,
): Promise<StepOutcome | undefined> {
  const installed = !!ctx.status.install?.completedAt;
  const plan = diskPlan(vm, {
    systemGiB: hw.diskGiB,
    systemExplicit: ctx.vs.spec.diskGiB !== undefined,
    disks: hw.disks,
    removeDisks: hw.removeDisks,
    installed,
  });
  ctx.status.vm = { ...ctx.status.vm, disks: plan.status.length ? plan.status : undefined };
  if (ctx.finished === "ConfigureDisks")
    ctx.log.info(
      { moRef: vm.moRef, disks: plan.status.map((d) => `${d.name}=${d.sizeGiB}GiB`) },
      "disks configured",
    );
  if (plan.shrinks.length) {
    const what = plan.shrinks
      .map((s) => `disk ${s.name} has ${s.haveGiB} GiB, ${s.wantGiB} GiB asked`)
      .join("; ");
    throw new StepError(
      "DiskShrinkNotSupported",
      `VM ${vm.name}: ${what}. A disk cannot be shrunk, so vsop changes no disk until the size ` +
        "is set back to at least its current size (spec.diskGiB, spec.disks or the class's hardware.disks).",
      { condition: "VMCreated", retryAfterSeconds: 30 },
    );
  }
  const { add, grow, remove } = plan.changes;
  if (add.length + grow.length + remove.length === 0) return undefined;
  const what = describe(plan.changes);
  const datacenter = ctx.cls.spec.placement.datacenter;
  const started = await startTask(
    ctx,
    vc,
    "ConfigureDisks",
    () =>
      vc.startConfigureDisks(vm.moRef, datacenter, plan.changes).catch((err: unknown) => {
        if (!(err instanceof PlacementNotFound && err.what === "datastore")) throw err;
        throw new StepError(
          "DatastoreNotFound",
          `Datastore "${err.objectName}" for a new disk does not exist in datacenter ${datacenter}; ` +
            "fix the disk's datastore (spec.disks or the class's hardware.disks) or create it.",
          { condition: "VMCreated", cause: err },
        );
      }),
    `VM ${vm.name}: ${what}.`,
    installed ? "Configuring" : "Creating",
  );
  if (started) ctx.log.info({ moRef: vm.moRef, changes: what }, "configuring disks");
  return started;
}

/** A sentence for VMCreated about data disks kept though no list names them any more. */
export function retainedDisksNote(ctx: ReconcileContext): string {
  const kept = (ctx.status.vm?.disks ?? []).filter((d) => d.retained).map((d) => d.name);
  if (!kept.length) return "";
  return (
    ` Disk${kept.length > 1 ? "s" : ""} ${kept.join(", ")} no longer listed in spec.disks or the ` +
    "class's hardware.disks; kept, as the class's hardware.removeDisks is false."
  );
}

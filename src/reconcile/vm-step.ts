// Step 2: the VM exists, is ours (found by the owner UID in its extraConfig, never by name alone),
// has a service NIC in the server's VLAN (and a boot NIC for network installs), and the size asked.
import { bootMethod, effectiveHardware, effectiveNetwork, vmName } from "../api/defaults.js";
import type { NicStatus, VirtualServer } from "../api/types.js";
import { StepError } from "../errors.js";
import type { CreateVMSpec, NicSpec, VCenter, VMRecord } from "../vsphere/vcenter.js";
import { condition, DONE, wait, type ReconcileContext, type Step } from "./context.js";
import type { VCenterPool } from "./vcenters.js";
import { portGroupError, vsphereStepError } from "./vsphere-errors.js";

export const OWNER_UID_KEY = "vsop.owner-uid";
export const OWNER_KEY = "vsop.owner";

export const ownerOf = (vs: VirtualServer) => `${vs.metadata.namespace}/${vs.metadata.name}`;

/** A connected, synced client for the class's vCenter, or the reason there is none. */
export async function connectedVCenter(
  pool: VCenterPool,
  ctx: ReconcileContext,
): Promise<VCenter | undefined> {
  let vc: VCenter;
  try {
    vc = await pool.get(ctx.cls);
  } catch (err) {
    throw vsphereStepError(err);
  }
  if (vc.synced()) return vc;
  const err = vc.lastError();
  if (err) throw vsphereStepError(err);
  return undefined;
}

/** The VM this object owns, if any; DuplicateOwnerMarker becomes its StepError. */
export function ownedVM(vc: VCenter, ctx: ReconcileContext): VMRecord | undefined {
  try {
    return vc.findByOwnerUID(ctx.vs.metadata.uid!);
  } catch (err) {
    throw vsphereStepError(err, { condition: "VMCreated" });
  }
}

export function nicStatus(vm: VMRecord, bootPortGroup: string): NicStatus[] {
  return vm.nics.map((n) => ({
    role: n.portGroup === bootPortGroup ? "boot" : "service",
    portGroup: n.portGroup,
    macAddress: n.macAddress,
    connected: n.connected,
  }));
}

export function recordVM(ctx: ReconcileContext, vm: VMRecord): void {
  ctx.status.vm = {
    moRef: vm.moRef,
    name: vm.name,
    instanceUUID: vm.instanceUUID,
    powerState: vm.powerState,
    nics: nicStatus(vm, effectiveNetwork(ctx.cls.spec).bootPortGroup),
  };
}

export function vmStep(pool: VCenterPool): Step {
  return {
    name: "vm",
    async run(ctx) {
      const vc = await connectedVCenter(pool, ctx);
      if (!vc) return wait(2, "Creating", "ConnectingToVCenter", "Connecting to vCenter.");
      const { vs, cls } = ctx;
      const uid = vs.metadata.uid!;
      const name = vmName(vs, cls.spec);
      const network = effectiveNetwork(cls.spec);
      const hw = effectiveHardware(vs, cls.spec);
      const method = bootMethod(cls.spec);
      const p = cls.spec.placement;
      const portGroup = ctx.resolved!.portGroup;
      const nics: NicSpec[] = [{ portGroup, role: "service" }];
      if (method === "network") nics.push({ portGroup: network.bootPortGroup, role: "boot" });
      const spec: CreateVMSpec = {
        name,
        placement: p,
        guestId: hw.guestId,
        cpus: hw.cpus,
        memoryMiB: hw.memoryMiB,
        diskGiB: hw.diskGiB,
        template: hw.template,
        nics,
        bootFromCdrom: method === "iso",
        extraConfig: { [OWNER_UID_KEY]: uid, [OWNER_KEY]: ownerOf(vs) },
        cpuHotAdd: true,
        memoryHotAdd: true,
      };
      let vm = ownedVM(vc, ctx);

      if (vm && !ctx.status.install?.startedAt) {
        // Ours but perhaps never finished: an operator killed between CreateVM_Task and the
        // reconfigure after it leaves a VM without its boot order (or CD-ROM). Costs nothing
        // when the cache shows the VM complete; once the install started, it is left alone.
        try {
          if (await vc.finishVM(vm.moRef, spec)) ctx.log.info({ moRef: vm.moRef }, "VM finished");
        } catch (err) {
          throw vsphereStepError(err, { condition: "VMCreated" });
        }
      }

      if (!vm) {
        const squatter = vc.findByName(name)[0];
        if (squatter) {
          throw new StepError(
            "VMNameConflict",
            `A VM named ${name} (${squatter.moRef}) already exists and is not owned by this VirtualServer` +
              (squatter.owner ? ` but by ${squatter.owner}` : "") +
              "; vsop never touches it. Rename or remove that VM, or choose another hostname.",
            { condition: "VMCreated" },
          );
        }
        try {
          await vc.checkPlacement(p);
        } catch (err) {
          throw vsphereStepError(err, { condition: "VMCreated" });
        }
        await vc.checkPortGroup(p.datacenter, portGroup).catch((err: unknown) => {
          throw portGroupError(err, false, portGroup, ctx.resolved!.vlan);
        });
        if (method === "network") {
          await vc.checkPortGroup(p.datacenter, network.bootPortGroup).catch((err: unknown) => {
            throw portGroupError(err, true, network.bootPortGroup);
          });
        }
        if (ctx.status.install) {
          // The VM this install state belongs to is gone (destroyed behind vsop's back, or a
          // vCenter that came back without it): a new VM is a blank machine and installs anew.
          ctx.log.warn({ previous: ctx.status.vm?.moRef }, "VM gone; a new one installs again");
          ctx.status.install = undefined;
        }
        ctx.log.info({ vm: name, portGroup, method }, "creating VM");
        let moRef: string;
        try {
          moRef = await vc.createVM(spec);
        } catch (err) {
          if ((err as { fault?: string }).fault === "DuplicateName")
            throw new StepError(
              "VMNameConflict",
              `vCenter already has a VM named ${name} that vsop does not own; rename or remove it.`,
              { condition: "VMCreated", cause: err },
            );
          throw vsphereStepError(err, { condition: "VMCreated" });
        }
        vm = vc.get(moRef);
        if (!vm)
          return wait(
            1,
            "Creating",
            "Creating",
            `VM ${moRef} created; waiting for vCenter to report it.`,
          );
        ctx.log.info({ vm: name, moRef }, "VM created");
      }

      await resize(vc, ctx, vm, hw);
      vm = vc.get(vm.moRef) ?? vm;
      recordVM(ctx, vm);
      condition(
        ctx,
        "VMCreated",
        "True",
        "Created",
        `VM ${vm.name} (${vm.moRef}) in datacenter ${cls.spec.placement.datacenter}.`,
      );
      return DONE;
    },

    async finalize(ctx) {
      const vc = await connectedVCenter(pool, ctx);
      if (!vc)
        return wait(
          2,
          "Deleting",
          "ConnectingToVCenter",
          "Connecting to vCenter to clean up the VM.",
        );
      const vm = ownedVM(vc, ctx);
      if (!vm) return DONE; // never created, or already gone
      try {
        if (ctx.vs.spec.deletionPolicy === "Retain") {
          await vc.setExtraConfig(vm.moRef, { [OWNER_UID_KEY]: "", [OWNER_KEY]: "" });
          ctx.log.info({ moRef: vm.moRef }, "VM retained; ownership marker removed");
        } else {
          await vc.powerOff(vm.moRef);
          await vc.destroy(vm.moRef);
          ctx.log.info({ moRef: vm.moRef }, "VM destroyed");
        }
      } catch (err) {
        throw vsphereStepError(err);
      }
      return DONE;
    },
  };
}

/** Applies cpus/memory changes: hot-add where allowed, power cycle if the class permits, else report. */
async function resize(
  vc: VCenter,
  ctx: ReconcileContext,
  vm: VMRecord,
  hw: { cpus: number; memoryMiB: number; powerCyclePolicy: string },
): Promise<void> {
  if (vm.cpus === hw.cpus && vm.memoryMiB === hw.memoryMiB) return;
  const off = vm.powerState !== "poweredOn";
  const hotOK =
    (vm.cpus === hw.cpus || (hw.cpus > vm.cpus && vm.cpuHotAddEnabled)) &&
    (vm.memoryMiB === hw.memoryMiB || (hw.memoryMiB > vm.memoryMiB && vm.memoryHotAddEnabled));
  const size = { cpus: hw.cpus, memoryMiB: hw.memoryMiB };
  try {
    if (off || hotOK) {
      await vc.resize(vm.moRef, size);
      ctx.log.info({ moRef: vm.moRef, ...size, hot: !off }, "VM resized");
      return;
    }
    if (hw.powerCyclePolicy !== "IfNeeded") {
      throw new StepError(
        "ResizeRequiresPowerCycle",
        `VM ${vm.name} has ${vm.cpus} CPUs and ${vm.memoryMiB} MiB; ${hw.cpus} CPUs and ${hw.memoryMiB} MiB ` +
          "need a power cycle (no hot-add or a decrease). Power it off to apply, or set the class's " +
          "hardware.powerCyclePolicy to IfNeeded.",
        { retryAfterSeconds: 30 },
      );
    }
    await vc.powerOff(vm.moRef);
    await vc.resize(vm.moRef, size);
    await vc.powerOn(vm.moRef);
    ctx.log.info({ moRef: vm.moRef, ...size }, "VM power-cycled to resize");
  } catch (err) {
    throw vsphereStepError(err, { condition: "VMCreated" });
  }
}

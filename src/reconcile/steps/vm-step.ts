// Step 2: the VM exists, is ours (found by the owner UID in its extraConfig, never by name alone),
// has a service NIC in the server's VLAN (and a boot NIC for network installs), and the size asked.
import { effectiveHardware, effectiveNetwork, targetSize, vmName } from "../../api/defaults.js";
import { bootMethodOf } from "../boot/index.js";
import type { VirtualServer } from "../../api/types.js";
import { faultName } from "../../vsphere/errors.js";
import { StepError } from "../../errors.js";
import {
  VMAlreadyExists,
  type CreateVMSpec,
  type NicSpec,
  type VMRecord,
} from "../../vsphere/vcenter.js";
import type { VSpherePool, VSpherePort } from "../engine/ports.js";
import {
  condition,
  DONE,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "../engine/context.js";
import { powerOffToDelete, startTask, taskInFlight } from "../engine/vsphere-task.js";
import { keyOf } from "../../controller/informer.js";
import { getCondition } from "../../controller/conditions.js";
import { PowerCycleSlots, unlimitedSlots } from "./power-cycle-slots.js";
import { portGroupError, vsphereStepError } from "../engine/vsphere-errors.js";
import { reconcileDisks, retainedDisksNote } from "./disks.js";
import { adopt, adoptedVM } from "./adopt.js";
import { checkExtraPortGroups, nicRoles, reconcileExtraNics } from "./extra-nics.js";
import { datastoreOf } from "../../vsphere/vms.js";
import { chooseDatastore, placementOf } from "./datastore-choice.js";

export const OWNER_UID_KEY = "vsop.owner-uid";
export const OWNER_KEY = "vsop.owner";

export const ownerOf = (vs: VirtualServer) => `${vs.metadata.namespace}/${vs.metadata.name}`;

/** A connected, synced client for the class's vCenter, or the reason there is none. */
export async function connectedVCenter<
  P extends Pick<VSpherePort, "synced" | "lastError"> = VSpherePort,
>(
  pool: { get(cls: ReconcileContext["cls"]): Promise<P> },
  ctx: ReconcileContext,
): Promise<P | undefined> {
  let vc: P;
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
export function ownedVM(
  vc: Pick<VSpherePort, "findByOwnerUID">,
  ctx: ReconcileContext,
): VMRecord | undefined {
  try {
    return vc.findByOwnerUID(ctx.vs.metadata.uid!);
  } catch (err) {
    throw vsphereStepError(err, { condition: "VMCreated" });
  }
}

export function recordVM(ctx: ReconcileContext, vm: VMRecord): void {
  ctx.status.vm = {
    ...ctx.status.vm,
    moRef: vm.moRef,
    name: vm.name,
    instanceUUID: vm.instanceUUID,
    powerState: vm.powerState,
    datastore: datastoreOf(vm) ?? ctx.status.vm?.datastore,
    nics: nicRoles(
      vm.nics,
      {
        servicePortGroup: ctx.resolved?.portGroup ?? ctx.status.portGroup,
        bootPortGroup: effectiveNetwork(ctx.cls.spec).bootPortGroup,
      },
      ctx.extraNetworks ?? [],
    ).status,
  };
}

/** An installed server whose spec asks it to be off: nothing powers it on (see power-step.ts). */
export const staysOff = (ctx: ReconcileContext) =>
  ctx.vs.spec.powerState === "Off" && !!ctx.status.install?.completedAt;

/** The VM's name is taken in vCenter by a VM vsop does not own. */
const nameConflict = (name: string, cause?: unknown) =>
  new StepError(
    "VMNameConflict",
    `vCenter already has a VM named ${name} that vsop does not own; rename or remove it.`,
    { condition: "VMCreated", cause },
  );

export function vmStep(pool: VSpherePool, slots: PowerCycleSlots = unlimitedSlots()): Step {
  return {
    name: "vm",
    async run(ctx) {
      const vc = await connectedVCenter(pool, ctx);
      if (!vc) return wait(2, "Creating", "ConnectingToVCenter", "Connecting to vCenter.");
      const busy = await taskInFlight(ctx, vc);
      if (busy) return busy;
      const { vs, cls } = ctx;
      const uid = vs.metadata.uid!;
      const name = vmName(vs, cls.spec);
      const hw = effectiveHardware(vs, cls.spec);
      const method = bootMethodOf(cls);
      const p = placementOf(cls.spec, ctx.status);
      const portGroup = ctx.resolved!.portGroup;
      const extras = ctx.extraNetworks ?? [];
      const nics: NicSpec[] = [
        { portGroup, role: "service" },
        ...method.nics(cls),
        ...extras.map((e): NicSpec => ({ portGroup: e.portGroup, role: "extra" })),
      ];
      const spec: CreateVMSpec = {
        name,
        placement: p,
        guestId: hw.guestId,
        cpus: hw.cpus,
        memoryMiB: hw.memoryMiB,
        diskGiB: hw.diskGiB,
        template: hw.template,
        nics,
        bootFromCdrom: method.bootFromCdrom,
        extraConfig: { [OWNER_UID_KEY]: uid, [OWNER_KEY]: ownerOf(vs) },
        cpuHotAdd: true,
        memoryHotAdd: true,
        firmware: hw.firmware,
        secureBoot: hw.secureBoot,
        linkedClone: hw.cloneMode === "Linked",
      };
      const vm = ownedVM(vc, ctx);

      if (!vm) {
        // An existing VM to manage instead (adopt.ts): nothing is created.
        if (vs.spec.adopt) return adopt(vc, ctx, spec.extraConfig);
        if (ctx.finished === "CreateVM")
          return wait(
            1,
            "Creating",
            "Creating",
            `VM ${name} created; waiting for vCenter to report it.`,
          );
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
        const chosen = await chooseDatastore(vc, ctx, spec);
        if (chosen) return chosen;
        try {
          await vc.checkPlacement(p);
        } catch (err) {
          throw vsphereStepError(err, { condition: "VMCreated" });
        }
        await vc.checkPortGroup(p.datacenter, portGroup).catch((err: unknown) => {
          throw portGroupError(err, false, portGroup, ctx.resolved!.vlan);
        });
        for (const nic of nics.filter((n) => n.role === "boot"))
          await vc.checkPortGroup(p.datacenter, nic.portGroup).catch((err: unknown) => {
            throw portGroupError(err, true, nic.portGroup);
          });
        await checkExtraPortGroups(vc, p.datacenter, extras);
        await method.check?.(vc, ctx);
        if (ctx.status.install) {
          // The VM this install state belongs to is gone (destroyed behind vsop's back, or a
          // vCenter that came back without it): a new VM is a blank machine and installs anew.
          ctx.log.warn({ previous: ctx.status.vm?.moRef }, "VM gone; a new one installs again");
          ctx.status.install = undefined;
        }
        // From here on the object may own a VM: deletion looks for it in vCenter.
        await ctx.claim?.();
        ctx.status.vm = { ...ctx.status.vm, name };
        ctx.log.info({ vm: name, portGroup, method: method.name }, "creating VM");
        const started = await startTask(
          ctx,
          vc,
          "CreateVM",
          () =>
            vc.startCreateVM(spec).catch((err: unknown) => {
              if (err instanceof VMAlreadyExists) return undefined; // read into the cache now
              throw faultName(err) === "DuplicateName" ? nameConflict(name, err) : err;
            }),
          `Creating VM ${name}.`,
        );
        return started ?? wait(0, "Creating", "Creating", `VM ${name} found; looking at it.`);
      }
      // This object has a VM: it keeps the finalizer (someone may have removed it by hand).
      await ctx.claim?.();
      if (ctx.finished === "CreateVM") ctx.log.info({ vm: name, moRef: vm.moRef }, "VM created");
      const adopted = adoptedVM(ctx, vm);

      if (!ctx.status.install?.startedAt) {
        // CD-ROM and boot order need the device keys vSphere assigned at creation; this also
        // finishes a VM whose operator was killed before it could. Once the install started,
        // the VM is left alone.
        const finishing = await startTask(
          ctx,
          vc,
          "FinishVM",
          () => vc.startFinishVM(vm.moRef, spec),
          `Finishing VM ${name} (CD-ROM, boot order).`,
        );
        if (finishing) return finishing;
      }

      const resizing = await resize(vc, ctx, vm, hw, slots, !!adopted);
      if (resizing) return resizing;
      const bootPG = effectiveNetwork(cls.spec).bootPortGroup;
      const adding = await reconcileExtraNics(vc, ctx, vc.get(vm.moRef) ?? vm, bootPG);
      if (adding) return adding;
      const disks = await reconcileDisks(vc, ctx, vc.get(vm.moRef) ?? vm, hw);
      if (disks) return disks;
      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      condition(
        ctx,
        "VMCreated",
        "True",
        adopted ? "Adopted" : "Created",
        `VM ${vm.name} (${vm.moRef}) in datacenter ${cls.spec.placement.datacenter}` +
          (adopted ? `, adopted at ${ctx.status.adoption!.completedAt} (spec.adopt).` : ".") +
          retainedDisksNote(ctx),
      );
      return DONE;
    },

    async finalize(ctx) {
      // The object carries the finalizer, so it was claimed before a VM was asked for (run):
      // only vCenter knows whether one exists.
      const vc = await connectedVCenter(pool, ctx);
      if (!vc)
        return wait(
          2,
          "Deleting",
          "ConnectingToVCenter",
          "Connecting to vCenter to clean up the VM.",
        );
      const busy = await taskInFlight(ctx, vc, "Deleting");
      if (busy) return busy;
      const vm = ownedVM(vc, ctx);
      if (!vm) {
        // Never created, or gone: by Destroy_Task, or its marker cleared by ReleaseVM.
        if (ctx.finished === "Destroy")
          ctx.log.info({ moRef: ctx.status.vm?.moRef }, "VM destroyed");
        if (ctx.finished === "ReleaseVM")
          ctx.log.info({ moRef: ctx.status.vm?.moRef }, "VM retained; ownership marker removed");
        return DONE;
      }
      if (ctx.vs.spec.deletionPolicy === "Retain") {
        const released = await startTask(
          ctx,
          vc,
          "ReleaseVM",
          () => vc.startSetExtraConfig(vm.moRef, { [OWNER_UID_KEY]: "", [OWNER_KEY]: "" }),
          `Removing vsop's ownership marker from VM ${vm.name} (deletionPolicy Retain).`,
        );
        return released ?? DONE;
      }
      const step =
        (await powerOffToDelete(ctx, vc, vm)) ??
        (await startTask(
          ctx,
          vc,
          "Destroy",
          () => vc.startDestroy(vm.moRef),
          `Destroying VM ${vm.name}.`,
        ));
      return step ?? DONE;
    },
  };
}

/**
 * Applies cpus/memory changes (see targetSize for which): hot-add where allowed, a power cycle if
 * the class permits and one of its slots is free (off, resize, on: one task per reconcile,
 * status.vm.powerCycle remembering to power on), else report.
 */
async function resize(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  hw: { powerCyclePolicy: string; maxUnavailable: number },
  slots: PowerCycleSlots,
  adopted: boolean,
): Promise<StepOutcome | undefined> {
  // An adopted VM keeps its own size: the class's hardware is for the VMs vsop creates.
  const size = targetSize(ctx.vs, ctx.cls.spec, vm, !adopted);
  if (vm.cpus === size.cpus && vm.memoryMiB === size.memoryMiB) {
    if (!ctx.status.vm?.powerCycle) return undefined;
    if (vm.powerState !== "poweredOn" && !staysOff(ctx))
      return startTask(
        ctx,
        vc,
        "PowerOnAfterResize",
        () => vc.startPower(vm.moRef, true),
        `Powering VM ${vm.name} on again after resizing it.`,
      );
    ctx.status.vm = { ...ctx.status.vm, powerCycle: undefined };
    slots.release(keyOf(ctx.vs));
    ctx.log.info({ moRef: vm.moRef, ...size }, "VM power-cycled to resize");
    return undefined;
  }
  const off = vm.powerState !== "poweredOn";
  const hotOK =
    (vm.cpus === size.cpus || (size.cpus > vm.cpus && vm.cpuHotAddEnabled)) &&
    (vm.memoryMiB === size.memoryMiB || (size.memoryMiB > vm.memoryMiB && vm.memoryHotAddEnabled));
  const wanted = `${size.cpus} CPUs and ${size.memoryMiB} MiB`;
  if (off || hotOK) {
    if (ctx.finished !== "Resize")
      ctx.log.info({ moRef: vm.moRef, ...size, hot: !off }, "resizing VM");
    return startTask(
      ctx,
      vc,
      "Resize",
      () => vc.startResize(vm.moRef, size),
      `Resizing VM ${vm.name} to ${wanted}.`,
    );
  }
  // To be powered off anyway (the power step does it): resized cold right after.
  if (staysOff(ctx)) return undefined;
  if (hw.powerCyclePolicy !== "IfNeeded") {
    throw new StepError(
      "ResizeRequiresPowerCycle",
      `VM ${vm.name} has ${vm.cpus} CPUs and ${vm.memoryMiB} MiB; ${wanted} ` +
        "need a power cycle (no hot-add or a decrease). Power it off to apply (spec.powerState Off, " +
        "then On), or set the class's " +
        "hardware.powerCyclePolicy to IfNeeded.",
      { retryAfterSeconds: 30 },
    );
  }
  const slot = slots.acquire(ctx.vs.spec.className, keyOf(ctx.vs), hw.maxUnavailable);
  if (!slot.granted) {
    if (getCondition(ctx.status.conditions, "Ready")?.reason !== "PowerCycleQueued")
      ctx.log.info({ holders: slot.holders }, "power cycle queued");
    return wait(
      15,
      "Waiting",
      "PowerCycleQueued",
      `VM ${vm.name} waits to be power-cycled to ${wanted}: ${slot.holders.join(", ")} ` +
        `of class ${ctx.vs.spec.className} ${slot.holders.length === 1 ? "is" : "are"} being ` +
        `power-cycled (hardware.maxUnavailable ${hw.maxUnavailable}).`,
    );
  }
  ctx.status.vm = { ...ctx.status.vm, powerCycle: true };
  return startTask(
    ctx,
    vc,
    "PowerOffToResize",
    () => vc.startPower(vm.moRef, false),
    `Powering VM ${vm.name} off to resize it (hardware.powerCyclePolicy IfNeeded).`,
  );
}

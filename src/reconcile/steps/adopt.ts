// Adopting an existing VM (spec.adopt: {moRef} or {name}) instead of creating one: vsop puts its
// owner marker on that VM only if no one else's marker is on it, skips create and install, and
// manages it from then on like any server of its (its NICs checked against the resolved VLAN,
// the install path kept closed, Puppet applied, deleted or released by spec.deletionPolicy).
// The choice is written to status.adoption before the marker is put, so a kill at any point
// neither loses the VM (deletion looks for it) nor installs over it (the install is skipped).
import type { AdoptSpec, VirtualServer } from "../../api/types.js";
import { StepError } from "../../errors.js";
import type { VMRecord } from "../../vsphere/vcenter.js";
import { wait, type ReconcileContext, type StepOutcome } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { startTask } from "../engine/vsphere-task.js";

/** Seconds before a refused or missing adoption target is looked at again. */
const RETRY_SECONDS = 30;

const what = (a: AdoptSpec) =>
  a.moRef ? `moRef ${a.moRef}` : a.name ? `name ${a.name}` : "no VM (set moRef or name)";

const refused = (message: string) =>
  new StepError("AdoptionRefused", message, {
    condition: "VMCreated",
    retryAfterSeconds: RETRY_SECONDS,
  });

/**
 * The VM spec.adopt names, if vsop may adopt it: it exists, is one VM (a name matching several is
 * refused), is no template, and carries no owner marker (this object's own marker never reaches
 * here: findByOwnerUID finds that VM first). Throws AdoptTargetNotFound or AdoptionRefused.
 */
export function adoptTarget(vc: Pick<VSpherePort, "get" | "findByName">, vs: VirtualServer) {
  const a = vs.spec.adopt ?? {};
  const found = a.moRef
    ? [vc.get(a.moRef)].filter((v): v is VMRecord => !!v)
    : a.name
      ? vc.findByName(a.name)
      : [];
  if (found.length === 0)
    throw new StepError(
      "AdoptTargetNotFound",
      `spec.adopt names ${what(a)}, and vCenter has no such VM; fix spec.adopt (or remove it to have ` +
        `vsop create a VM). vsop looks again every ${RETRY_SECONDS} s.`,
      { condition: "VMCreated", retryAfterSeconds: RETRY_SECONDS },
    );
  if (found.length > 1)
    throw refused(
      `${found.length} VMs are named ${a.name} (${found.map((v) => v.moRef).join(", ")}); ` +
        "name the one to adopt by spec.adopt.moRef.",
    );
  const vm = found[0]!;
  if (vm.template)
    throw refused(`VM ${vm.name} (${vm.moRef}) is a template; vsop adopts VMs only.`);
  if (vm.ownerUID || vm.owner)
    throw refused(
      `VM ${vm.name} (${vm.moRef}) carries the owner marker of ` +
        `${vm.owner ? `VirtualServer ${vm.owner}` : "another VirtualServer"}` +
        `${vm.ownerUID ? ` (vsop.owner-uid ${vm.ownerUID})` : ""}; vsop adopts only a VM no ` +
        "VirtualServer owns and never changes it. Delete that VirtualServer with deletionPolicy " +
        "Retain to release the VM, or adopt another.",
    );
  return vm;
}

/** Wrong when the VM has no NIC in the port group of the server's VLAN (vsop moves no NIC). */
export function vlanMismatch(vm: VMRecord, portGroup: string, address?: string) {
  if (vm.nics.some((n) => n.portGroup === portGroup)) return undefined;
  const has = vm.nics.map((n) => n.portGroup).join(", ") || "none";
  return new StepError(
    "VLANMismatch",
    `VM ${vm.name} (${vm.moRef}) has no NIC on port group ${portGroup}, where ` +
      `${address ?? "the server's address"} belongs (its NICs: ${has}); vsop does not move the NICs ` +
      `of a VM it adopts: connect one to ${portGroup}, or fix the DNS record.`,
    { condition: "VMCreated", retryAfterSeconds: RETRY_SECONDS },
  );
}

/**
 * The vm step for a server without a VM whose spec.adopt names one: records the choice, then
 * puts the owner marker (`marker`: vsop.owner-uid and vsop.owner) on it as one vSphere task.
 * The VM never gets anything else here; once the marker shows, adoptedVM() takes over.
 */
export async function adopt(
  vc: VSpherePort,
  ctx: ReconcileContext,
  marker: Record<string, string>,
): Promise<StepOutcome> {
  if (ctx.finished === "AdoptVM")
    return wait(1, "Creating", "Adopting", "VM marked; waiting for vCenter to report it.");
  const vm = adoptTarget(vc, ctx.vs);
  const mismatch = vlanMismatch(vm, ctx.resolved!.portGroup, ctx.resolved!.address);
  if (mismatch) throw mismatch;
  const a = ctx.status.adoption;
  if (a?.moRef !== vm.moRef || a.completedAt) {
    // The choice first: once the marker is on, the install is skipped for this VM.
    ctx.status.adoption = { moRef: vm.moRef, name: vm.name, startedAt: new Date().toISOString() };
    ctx.status.vm = { ...ctx.status.vm, name: vm.name };
    ctx.log.info({ moRef: vm.moRef, vm: vm.name }, "adopting VM (spec.adopt)");
    return wait(0, "Creating", "Adopting", `Adopting VM ${vm.name} (${vm.moRef}) (spec.adopt).`);
  }
  await ctx.claim?.(); // before the marker: deletion must look for the VM from now on
  const started = await startTask(
    ctx,
    vc,
    "AdoptVM",
    () => vc.startSetExtraConfig(vm.moRef, marker),
    `Putting vsop's owner marker on VM ${vm.name} (${vm.moRef}) to adopt it.`,
  );
  return started ?? wait(1, "Creating", "Adopting", `Adopting VM ${vm.name} (${vm.moRef}).`);
}

/**
 * For the server's own VM: whether it is an adopted one. The first time, the adoption is
 * recorded as complete, with an install that vsop skips (the VM runs its own system); each time,
 * its NICs are checked against the server's VLAN. An old record of another VM is dropped.
 */
export function adoptedVM(ctx: ReconcileContext, vm: VMRecord): boolean {
  const a = ctx.status.adoption;
  if (!a) return false;
  if (a.moRef !== vm.moRef) {
    ctx.status.adoption = undefined;
    return false;
  }
  if (!a.completedAt) {
    const at = new Date().toISOString();
    ctx.status.adoption = { ...a, completedAt: at };
    ctx.status.install = { method: "adopted", startedAt: at, completedAt: at };
    ctx.log.info({ moRef: vm.moRef, vm: vm.name }, "VM adopted; no install");
  }
  const mismatch = vlanMismatch(vm, ctx.resolved!.portGroup, ctx.resolved!.address);
  if (mismatch) throw mismatch;
  return true;
}

// Rebuild in place (spec.rebuildRequestedAt): the same VM is installed again. Each value is
// honoured once. The intent is written to status.rebuild before anything is touched; then, one
// vSphere task per reconcile: whatever must happen before the reinstall (beforeReinstall), the VM
// powered off, a half-done install's path taken away; then the previous install state is dropped
// (the spent install token, status.install, the Puppet run) in one status write. From there the
// ordinary steps install the VM as a new one: a new token, the boot NIC connected again (network)
// or a fresh ISO / guestinfo data, power-on, the installer's signal, the handoff (the boot NIC
// disconnected again), the first Puppet run. Runs after the vm step (the VM exists and is ours).
import type { RebuildStatus, VirtualServerStatus } from "../../api/types.js";
import { bootMethodOf } from "../boot/index.js";
import type { RecordWarning } from "../boot/boot-method.js";
import {
  condition,
  DONE,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "../engine/context.js";
import type { InstallDeps } from "../boot/install-data.js";
import { connectedVCenter, ownedVM } from "./vm-step.js";
import { startTask, taskInFlight } from "../engine/vsphere-task.js";

export type RebuildDecision =
  /** Nothing asked, or the value was honoured already. */
  | { kind: "none" }
  /** Asked before the first install started: that install is a fresh one anyway. */
  | { kind: "honour"; value: string }
  | { kind: "start"; value: string }
  /** A rebuild is under way; a newer value waits until it completed. */
  | { kind: "continue" };

/** What spec.rebuildRequestedAt asks of a server whose status is `status`. */
export function rebuildDecision(
  value: string | undefined,
  status: VirtualServerStatus,
): RebuildDecision {
  const r = status.rebuild ?? {};
  if (r.startedAt && !r.completedAt) return { kind: "continue" };
  if (!value || value === r.requestedAt) return { kind: "none" };
  if (!status.install?.startedAt) return { kind: "honour", value };
  return { kind: "start", value };
}

/** A rebuild has started and the reinstalled server has not reported installed yet. */
export const rebuilding = (status: VirtualServerStatus) =>
  !!status.rebuild?.startedAt && !status.rebuild.completedAt;

/**
 * Work that must be done before the VM is reinstalled, e.g. revoking and cleaning the server's
 * Puppet certificate on the master, so the reinstalled agent can be signed again. Called on every
 * reconcile of the rebuild's first stage until it returns undefined (done); it returns a wait
 * while it is not done and throws a StepError when it fails. It must be idempotent: after a kill
 * it runs again. The VM is still as it was (running the old system) while it runs.
 */
export type BeforeReinstall = (ctx: ReconcileContext) => Promise<StepOutcome | undefined>;

export interface RebuildDeps {
  install: InstallDeps;
  /** Records a Warning Event (a boot NIC found reconnected while a half-done install is undone). */
  record: RecordWarning;
  beforeReinstall?: BeforeReinstall;
}

/** Requeued at once: the next stage follows as soon as this one's status is written. */
const stopping = (message: string) => wait(0, "Installing", "Rebuilding", message);

export function rebuildStep(deps: RebuildDeps): Step {
  return {
    name: "rebuild",
    async run(ctx) {
      const d = rebuildDecision(ctx.vs.spec.rebuildRequestedAt, ctx.status);
      const host = ctx.vs.spec.hostname;
      if (d.kind === "none") return DONE;
      if (d.kind === "honour") {
        ctx.status.rebuild = { requestedAt: d.value };
        ctx.log.info({ request: d.value }, "rebuild request needs no rebuild: not installed yet");
        return DONE;
      }
      if (d.kind === "start") {
        // Intent first: once status says so, every later reconcile carries the rebuild on.
        ctx.status.rebuild = { requestedAt: d.value, startedAt: new Date().toISOString() };
        ctx.log.info({ request: d.value, moRef: ctx.status.vm?.moRef }, "rebuild started");
        return stopping(
          `Rebuilding ${host} (spec.rebuildRequestedAt ${d.value}): its VM is powered off and installed again.`,
        );
      }
      const r = ctx.status.rebuild!;
      if (r.reinstallStartedAt) {
        // The ordinary steps install it; done once the new install reported itself.
        const done = ctx.status.install?.completedAt;
        if (done) {
          ctx.status.rebuild = { ...r, completedAt: done };
          ctx.log.info({ request: r.requestedAt }, "rebuilt: reinstalled");
        }
        return DONE;
      }
      return stop(deps, ctx, r);
    },
  };
}

/** The rebuild's first stage, one action per reconcile; then the install state is dropped. */
async function stop(
  deps: RebuildDeps,
  ctx: ReconcileContext,
  r: RebuildStatus,
): Promise<StepOutcome> {
  const vc = await connectedVCenter(deps.install.pool, ctx);
  if (!vc) return wait(2, "Installing", "ConnectingToVCenter", "Connecting to vCenter.");
  const busy = await taskInFlight(ctx, vc);
  if (busy) return busy;
  const vm = ownedVM(vc, ctx);
  if (!vm) return wait(2, "Installing", "Rebuilding", "Waiting for vCenter to report the VM.");

  const before = await deps.beforeReinstall?.(ctx);
  if (before) return before;

  const off = await startTask(
    ctx,
    vc,
    "PowerOffToRebuild",
    () => vc.startPower(vm.moRef, false),
    `Powering off VM ${vm.name} to rebuild ${ctx.vs.spec.hostname}.`,
  );
  if (off) return off;
  if (ctx.finished === "PowerOffToRebuild") ctx.log.info({ moRef: vm.moRef }, "VM off to rebuild");

  // A rebuild asked while an install was under way: that install's ISO or guestinfo data (with
  // its token, about to be dropped) must go, or the new install would find and reuse it.
  if (!ctx.status.install?.completedAt) {
    const b = { ctx, deps: deps.install, vc, vm };
    const clearing = await bootMethodOf(ctx.cls).handoff(b, deps.record);
    if (clearing) return clearing;
  }

  // The previous install's state goes in one status write, before anything of the new install
  // starts: written, the ordinary steps install anew; lost (a conflict, a kill), this is redone.
  await deps.install.tokens.delete(ctx.vs.metadata.uid!);
  const requestedFor = ctx.status.puppet?.requestedFor;
  ctx.status.install = undefined;
  ctx.status.puppet = requestedFor ? { requestedFor } : undefined;
  const now = new Date().toISOString();
  ctx.status.rebuild = { ...r, reinstallStartedAt: now };
  const why = `Rebuilding (spec.rebuildRequestedAt ${r.requestedAt})`;
  condition(ctx, "Installed", "False", "Rebuilding", `${why}: installing again.`);
  if (ctx.status.conditions?.some((c) => c.type === "BootNICDisconnected"))
    condition(
      ctx,
      "BootNICDisconnected",
      "False",
      "Rebuilding",
      `${why}: the boot NIC is connected for the install.`,
    );
  if (ctx.status.conditions?.some((c) => c.type === "PuppetApplied"))
    condition(ctx, "PuppetApplied", "False", "Rebuilding", `${why}: Puppet runs once reinstalled.`);
  ctx.log.info({ moRef: vm.moRef }, "rebuild: install state dropped; installing again");
  return stopping(`${why}: VM ${vm.name} is off; installing it again with a new install token.`);
}

/** The Normal Events of a rebuild's progress, from the status before and after a write. */
export function rebuildEvents(
  before: VirtualServerStatus,
  after: VirtualServerStatus,
  hostname: string,
): { reason: string; message: string }[] {
  const a = after.rebuild;
  const b = before.rebuild ?? {};
  if (!a?.startedAt) return [];
  const out: { reason: string; message: string }[] = [];
  const request = `spec.rebuildRequestedAt ${a.requestedAt}`;
  if (a.startedAt !== b.startedAt)
    out.push({
      reason: "RebuildStarted",
      message: `Rebuilding ${hostname} in place on VM ${after.vm?.moRef ?? "?"} (${request}): it is powered off and installed again.`,
    });
  if (a.reinstallStartedAt && a.reinstallStartedAt !== b.reinstallStartedAt)
    out.push({
      reason: "Reinstalling",
      message: `${hostname} is off and its previous install state is dropped; it installs again with a new install token (${request}).`,
    });
  if (a.completedAt && a.completedAt !== b.completedAt)
    out.push({
      reason: "Rebuilt",
      message: `${hostname} was reinstalled at ${a.completedAt} (${request}); the install path is closed and Puppet applied as after a first install.`,
    });
  return out;
}

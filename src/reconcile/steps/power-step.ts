// Step 6: the installed server's power as its spec asks. spec.powerState On (default) or Off, done
// by spec.powerOffMode: Soft asks the guest to shut down (VMware Tools), Hard powers off,
// TrySoft (default) asks softly and powers off when the guest has no Tools or is not off within
// the class's hardware.shutdownTimeout. spec.restartRequestedAt restarts it once per value.
// Runs after the install and its handoff: until then the install steps power the VM as the
// install needs. ShutdownGuest and RebootGuest are not tasks (they return at once): the time the
// shutdown was asked lives in status.power, and the VM's power state change wakes the key.
import type { PowerOffMode } from "../../api/types.js";
import { StepError } from "../../errors.js";
import { faultName } from "../../vsphere/errors.js";
import type { VMRecord } from "../../vsphere/vcenter.js";
import {
  DONE,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "../engine/context.js";
import type { VSpherePool, VSpherePort } from "../engine/ports.js";
import { connectedVCenter, ownedVM, recordVM } from "./vm-step.js";
import { startTask, taskInFlight, TASK_RECHECK_SECONDS } from "../engine/vsphere-task.js";
import { vsphereStepError } from "../engine/vsphere-errors.js";

/** A powered-off server is looked at this often by itself (a VM change wakes it sooner). */
export const POWERED_OFF_RECHECK_SECONDS = 300;

const modeOf = (ctx: ReconcileContext): PowerOffMode => ctx.vs.spec.powerOffMode ?? "TrySoft";

type Honoured = Map<string, { restartedFor: string; restartedAt?: string }>;

/**
 * The spec.restartRequestedAt value not yet honoured, if any. `honoured` is what this process
 * honoured and may not be in the status it reads yet (a watch that lags behind our own write, a
 * write that conflicted): a guest reboot is no task that could be found again, so without it a
 * stale status would reboot the server twice. Such a value is put back into status instead.
 */
function pendingRestart(ctx: ReconcileContext, honoured: Honoured): string | undefined {
  const value = ctx.vs.spec.restartRequestedAt;
  const uid = ctx.vs.metadata.uid!;
  const mine = honoured.get(uid);
  if (!value || value === ctx.status.power?.restartedFor) {
    if (mine?.restartedFor === value) honoured.delete(uid);
    return undefined;
  }
  if (mine?.restartedFor !== value) return value;
  ctx.status.power = { ...ctx.status.power, ...mine };
  return undefined;
}

/** Records a restart request as honoured: it asks for nothing more. */
function honour(ctx: ReconcileContext, honoured: Honoured, value: string, restarted: boolean) {
  const record = {
    restartedFor: value,
    restartedAt: restarted ? new Date().toISOString() : undefined,
  };
  honoured.set(ctx.vs.metadata.uid!, record);
  ctx.status.power = { ...ctx.status.power, ...record };
}

const toolsNotRunning = (vm: VMRecord, what: string, cause?: unknown) =>
  new StepError(
    "GuestToolsNotRunning",
    `VM ${vm.name} cannot ${what} softly: VMware Tools do not run in its guest ` +
      `(spec.powerOffMode Soft). Start them in the guest, or set spec.powerOffMode to TrySoft or Hard.`,
    { cause, retryAfterSeconds: 60 },
  );

/** Whether vCenter refused a guest operation for lack of VMware Tools. */
const toolsUnavailable = (err: unknown) => faultName(err) === "ToolsUnavailable";

export function powerStep(pool: VSpherePool): Step {
  const honoured: Honoured = new Map();
  return {
    name: "power",
    async run(ctx) {
      const vc = await connectedVCenter(pool, ctx);
      if (!vc) return wait(2, "Configuring", "ConnectingToVCenter", "Connecting to vCenter.");
      const busy = await taskInFlight(ctx, vc);
      if (busy) return busy;
      const vm = ownedVM(vc, ctx);
      if (!vm) return wait(2, "Creating", "Creating", "Waiting for vCenter to report the VM.");
      const outcome =
        ctx.vs.spec.powerState === "Off"
          ? await powerOff(vc, ctx, vm, honoured)
          : await powerOn(vc, ctx, vm, honoured);
      recordVM(ctx, vc.get(vm.moRef) ?? vm);
      return outcome;
    },
  };
}

async function powerOn(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  honoured: Honoured,
): Promise<StepOutcome> {
  if (ctx.status.power?.shutdownRequestedAt)
    ctx.status.power = { ...ctx.status.power, shutdownRequestedAt: undefined };
  const request = pendingRestart(ctx, honoured);
  if (vm.powerState !== "poweredOn") {
    // A fresh boot answers a restart request too.
    if (request) honour(ctx, honoured, request, true);
    ctx.log.info({ moRef: vm.moRef, was: vm.powerState }, "powering VM on (spec.powerState On)");
    const started = await startTask(
      ctx,
      vc,
      "PowerOnRequested",
      () => vc.startPower(vm.moRef, true),
      `Powering on VM ${vm.name} (spec.powerState On).`,
    );
    return started ?? DONE;
  }
  if (ctx.finished === "PowerOnRequested") ctx.log.info({ moRef: vm.moRef }, "VM powered on");
  if (ctx.finished === "Restart") ctx.log.info({ moRef: vm.moRef }, "VM reset");
  return request ? restart(vc, ctx, vm, honoured, request) : DONE;
}

/** One restart for `request`: the guest's own (RebootGuest) when it can, else a reset. */
async function restart(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  honoured: Honoured,
  request: string,
): Promise<StepOutcome> {
  const mode = modeOf(ctx);
  const host = ctx.vs.spec.hostname;
  if (mode !== "Hard") {
    if (!vm.toolsRunning && mode === "Soft") throw toolsNotRunning(vm, "restart");
    if (vm.toolsRunning) {
      try {
        await vc.startRebootGuest(vm.moRef);
        honour(ctx, honoured, request, true);
        ctx.log.info({ moRef: vm.moRef, request }, "asked the guest to restart");
        return wait(
          5,
          "Configuring",
          "Restarting",
          `Asked the guest of ${host} to restart (spec.restartRequestedAt ${request}).`,
        );
      } catch (err) {
        if (!toolsUnavailable(err)) throw vsphereStepError(err);
        if (mode === "Soft") throw toolsNotRunning(vm, "restart", err);
      }
    }
  }
  // Honoured when the reset is started: a reset that fails is reported, not repeated; a new
  // value asks again.
  honour(ctx, honoured, request, true);
  ctx.log.info({ moRef: vm.moRef, request, mode }, "resetting VM to restart it");
  const started = await startTask(
    ctx,
    vc,
    "Restart",
    () => vc.startReset(vm.moRef),
    `Resetting VM ${vm.name} to restart ${host} (spec.restartRequestedAt ${request}` +
      (mode === "Hard" ? ", spec.powerOffMode Hard)." : "; VMware Tools do not run in its guest)."),
  );
  return started ?? DONE;
}

async function powerOff(
  vc: VSpherePort,
  ctx: ReconcileContext,
  vm: VMRecord,
  honoured: Honoured,
): Promise<StepOutcome> {
  const host = ctx.vs.spec.hostname;
  const request = pendingRestart(ctx, honoured);
  if (request) {
    // Nothing runs that could restart; the next power-on is a fresh boot anyway.
    honour(ctx, honoured, request, false);
    ctx.log.info({ request }, "restart request needs no restart: the server is powered off");
  }
  const asked = ctx.status.power?.shutdownRequestedAt;
  const poweredOff = () =>
    wait(
      POWERED_OFF_RECHECK_SECONDS,
      "PoweredOff",
      "PoweredOff",
      `${host} is powered off, as spec.powerState asks; set it to On to start it again.`,
    );
  if (vm.powerState === "poweredOff") {
    if (asked || ctx.finished === "PowerOffRequested")
      ctx.log.info({ moRef: vm.moRef, soft: !!asked }, "VM powered off (spec.powerState Off)");
    if (asked) ctx.status.power = { ...ctx.status.power, shutdownRequestedAt: undefined };
    return poweredOff();
  }

  const mode = modeOf(ctx);
  const timeout = ctx.settings.shutdownTimeout;
  let hard: string | undefined;
  if (mode === "Hard") hard = "spec.powerOffMode Hard";
  else if (asked) {
    const left = Date.parse(asked) + timeout.seconds * 1000 - Date.now();
    if (left > 0)
      return wait(
        Math.min(TASK_RECHECK_SECONDS, Math.ceil(left / 1000)),
        "Configuring",
        "PoweringOff",
        `Waiting for the guest of ${host} to shut down (asked at ${asked}` +
          (mode === "TrySoft"
            ? `; powered off hard if it is not off within ${timeout.text}).`
            : ")."),
      );
    if (mode === "Soft")
      throw new StepError(
        "GuestShutdownTimedOut",
        `The guest of ${host} did not shut down within ${timeout.text} of vsop asking it at ${asked} ` +
          "(spec.powerOffMode Soft); check its console, or set spec.powerOffMode to TrySoft or Hard. " +
          "vsop keeps watching.",
        { retryAfterSeconds: 60 },
      );
    hard = `its guest did not shut down within ${timeout.text}, hardware.shutdownTimeout`;
  } else if (vm.powerState !== "poweredOn") hard = `it is ${vm.powerState}`;
  else if (!vm.toolsRunning) {
    if (mode === "Soft") throw toolsNotRunning(vm, "shut down");
    hard = "VMware Tools do not run in its guest";
  } else {
    try {
      await vc.startShutdownGuest(vm.moRef);
      const at = new Date().toISOString();
      ctx.status.power = { ...ctx.status.power, shutdownRequestedAt: at };
      ctx.log.info({ moRef: vm.moRef, mode }, "asked the guest to shut down");
      return wait(
        Math.min(TASK_RECHECK_SECONDS, timeout.seconds),
        "Configuring",
        "PoweringOff",
        `Asked the guest of ${host} to shut down at ${at} (spec.powerState Off).`,
      );
    } catch (err) {
      if (!toolsUnavailable(err)) throw vsphereStepError(err);
      if (mode === "Soft") throw toolsNotRunning(vm, "shut down", err);
      hard = "VMware Tools do not run in its guest";
    }
  }
  ctx.log.info({ moRef: vm.moRef, why: hard }, "powering VM off (spec.powerState Off)");
  const started = await startTask(
    ctx,
    vc,
    "PowerOffRequested",
    () => vc.startPower(vm.moRef, false),
    `Powering off VM ${vm.name} (spec.powerState Off; ${hard}).`,
  );
  return started ?? poweredOff();
}

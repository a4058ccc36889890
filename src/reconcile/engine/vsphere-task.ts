// One vSphere task in flight per server, recorded in status.vm.task (as CAPV records its
// TaskRef): a step starts a task, records it and returns; the task's end wakes the key (the
// vCenter client's task watch, or the change the task makes to its VM, or else a recheck); the
// next reconcile reads how it ended, and only then does any step look at vSphere again. A
// reconcile never waits for vCenter.
import type { ConditionType, Phase } from "../../api/types.js";
import { StepError } from "../../errors.js";
import { VSphereTaskError } from "../../vsphere/errors.js";
import { inFlight } from "../../vsphere/task-state.js";
import type { InFlightTask, VCenter } from "../../vsphere/vcenter.js";
import { wait, type ReconcileContext, type StepOutcome } from "./context.js";
import { vsphereStepError } from "./vsphere-errors.js";

/**
 * When a reconcile looks at a running task again by itself, should no wake come: soon at first,
 * then less often. A task whose end shows in its VM (`watched`: power state, devices, config)
 * also wakes the reconcile through the update loop, so its recheck starts at 3 s and doubles.
 * Others (a datastore file, a cluster rule) start at 1 s and grow with a fifth of the running
 * time.
 */
export function recheckSeconds(startedAt: string, now = Date.now(), watched = false): number {
  const running = Math.max(0, (now - Date.parse(startedAt)) / 1000) || 0;
  return watched
    ? Math.min(TASK_RECHECK_SECONDS, Math.max(WATCHED_FIRST_RECHECK, Math.round(running)))
    : Math.min(TASK_RECHECK_SECONDS, Math.max(1, Math.round(running / 5)));
}
export const TASK_RECHECK_SECONDS = 15;
const WATCHED_FIRST_RECHECK = 3;

/** What each operation is part of: its failure is reported on that condition. */
const OPERATIONS: Record<string, { condition?: ConditionType; phase: Phase; reason: string }> = {
  CreateVM: { condition: "VMCreated", phase: "Creating", reason: "Creating" },
  FinishVM: { condition: "VMCreated", phase: "Creating", reason: "Creating" },
  Resize: { condition: "VMCreated", phase: "Configuring", reason: "Resizing" },
  PowerOffToResize: { condition: "VMCreated", phase: "Configuring", reason: "Resizing" },
  PowerOnAfterResize: { condition: "VMCreated", phase: "Configuring", reason: "Resizing" },
  // Adding, growing or removing disks (disks.ts).
  ConfigureDisks: { condition: "VMCreated", phase: "Configuring", reason: "Configuring" },
  // spec.extraNetworks added to an existing VM (extra-nics.ts).
  AddNICs: { condition: "VMCreated", phase: "Configuring", reason: "Configuring" },
  AttachISO: { condition: "Installed", phase: "Creating", reason: "PoweringOn" },
  SetGuestinfo: { condition: "Installed", phase: "Creating", reason: "PoweringOn" },
  PowerOn: { condition: "Installed", phase: "Creating", reason: "PoweringOn" },
  // A network install after a rebuild: the boot NIC the last handoff disconnected.
  ConnectBootNIC: { condition: "Installed", phase: "Installing", reason: "Rebuilding" },
  // spec.rebuildRequestedAt (rebuild-step.ts) and spec.adopt (adopt.ts).
  PowerOffToRebuild: { condition: "Installed", phase: "Installing", reason: "Rebuilding" },
  AdoptVM: { condition: "VMCreated", phase: "Creating", reason: "Adopting" },
  DisconnectBootNIC: {
    condition: "BootNICDisconnected",
    phase: "Configuring",
    reason: "Disconnecting",
  },
  DetachISO: { phase: "Configuring", reason: "Disconnecting" },
  DeleteISO: { phase: "Configuring", reason: "Disconnecting" },
  ClearGuestinfo: { phase: "Configuring", reason: "Disconnecting" },
  // spec.powerState and spec.restartRequestedAt on an installed server (power-step.ts).
  PowerOffRequested: { phase: "Configuring", reason: "PoweringOff" },
  PowerOnRequested: { phase: "Configuring", reason: "PoweringOn" },
  Restart: { phase: "Configuring", reason: "Restarting" },
  PowerOff: { phase: "Deleting", reason: "Deleting" },
  Destroy: { phase: "Deleting", reason: "Deleting" },
  ReleaseVM: { phase: "Deleting", reason: "Deleting" },
};
export type Operation = keyof typeof OPERATIONS;

/** Operations whose end changes nothing the update loop watches: a datastore file. */
const UNWATCHED = new Set<string>(["DeleteISO"]);
const watched = (operation: string) => !UNWATCHED.has(operation);

/** What the task bookkeeping needs of a vCenter client (a fake in unit tests). */
export type TaskPort = Pick<VCenter, "taskState" | "track" | "inFlight" | "forget">;
export type { InFlightTask };

/** Task ends that leave nothing to report: someone else made the change, or the object is gone. */
const SETTLED_FAULTS = new Set(["InvalidPowerState", "ManagedObjectNotFound", "FileNotFound"]);

const keyOf = (ctx: ReconcileContext) => `${ctx.vs.metadata.namespace}/${ctx.vs.metadata.name}`;

/**
 * The server's task in flight, if any: still running → the outcome to return (a wait); failed →
 * its StepError; ended → cleared from status, `ctx.finished` names it, and the steps go on.
 * A task this process started but whose record did not reach status (a conflict, an API server
 * outage) counts too, and before the record in status.
 */
export async function taskInFlight(
  ctx: ReconcileContext,
  vc: TaskPort,
  phase?: Phase,
): Promise<StepOutcome | undefined> {
  const key = keyOf(ctx);
  // This process's own record first: status may still show a task that ended before this one
  // was started (its status write failed, or the cache is behind), and the steps would start
  // this one again.
  const t = vc.inFlight(key) ?? ctx.status.vm?.task;
  if (!t) return undefined;
  const op = OPERATIONS[t.operation] ?? { phase: "Creating", reason: "Creating" };
  let state;
  try {
    state = await vc.taskState(t.moRef);
  } catch (err) {
    throw vsphereStepError(err, { condition: op.condition });
  }
  if (inFlight(state)) {
    vc.track(t, key);
    return wait(
      recheckSeconds(t.startedAt, Date.now(), watched(t.operation)),
      phase ?? op.phase,
      op.reason,
      `vCenter is running ${t.operation} for ${ctx.vs.spec.hostname} (task ${t.moRef}, started ${t.startedAt}).`,
    );
  }
  if (ctx.status.vm?.task) ctx.status.vm = { ...ctx.status.vm, task: undefined };
  vc.forget(key, t.moRef);
  ctx.finished = t.operation;
  if (state.state === "error" && !SETTLED_FAULTS.has(state.fault)) {
    ctx.log.warn(
      { operation: t.operation, task: t.moRef, fault: state.fault },
      "vSphere task failed",
    );
    const err = new VSphereTaskError(t.moRef, state.fault, state.message, {
      method: t.operation,
    });
    if (t.operation === "CreateVM" && state.fault === "DuplicateName")
      throw new StepError(
        "VMNameConflict",
        `vCenter already has a VM named ${ctx.status.vm?.name ?? ctx.vs.spec.hostname} that vsop does not own; rename or remove it.`,
        { condition: "VMCreated", cause: err },
      );
    throw vsphereStepError(err, { condition: op.condition });
  }
  ctx.log.info(
    { operation: t.operation, task: t.moRef, state: state.state },
    state.state === "gone" ? "vSphere task gone; observing the VM" : "vSphere task ended",
  );
  return undefined;
}

/** Records a started task in status and returns the wait that ends when the task does. */
export function taskStarted(
  ctx: ReconcileContext,
  vc: TaskPort,
  operation: Operation,
  task: string,
  message: string,
  phase?: Phase,
): StepOutcome {
  const record = { operation, moRef: task, startedAt: new Date().toISOString() };
  ctx.status.vm = { ...ctx.status.vm, task: record };
  vc.track(record, keyOf(ctx));
  ctx.log.info({ operation, task }, "vSphere task started");
  const op = OPERATIONS[operation]!;
  return wait(
    watched(operation) ? WATCHED_FIRST_RECHECK : 1,
    phase ?? op.phase,
    op.reason,
    message,
  );
}

/**
 * Starts an operation when it is needed (`start` returns undefined when it is not). Needed again
 * right after its task succeeded means vCenter accepted the change but did not make it: the
 * new task is recorded, and the step fails with a reason, so it is retried at a slow pace.
 */
export async function startTask(
  ctx: ReconcileContext,
  vc: TaskPort,
  operation: Operation,
  start: () => Promise<string | undefined>,
  message: string,
  phase?: Phase,
): Promise<StepOutcome | undefined> {
  let task: string | undefined;
  try {
    task = await start();
  } catch (err) {
    throw vsphereStepError(err, { condition: OPERATIONS[operation]!.condition });
  }
  if (!task) return undefined;
  const outcome = taskStarted(ctx, vc, operation, task, message, phase);
  if (ctx.finished === operation)
    throw new StepError(
      "VSphereError",
      `vCenter reported ${operation} for ${ctx.vs.spec.hostname} done, but the VM does not show the change; vsop tries again.`,
      { condition: OPERATIONS[operation]!.condition, retryAfterSeconds: 30 },
    );
  return outcome;
}

/** Powers a VM off (hard) before it or its ISO is deleted; undefined when it is off. */
export function powerOffToDelete(
  ctx: ReconcileContext,
  vc: TaskPort & Pick<VCenter, "startPower">,
  vm: { moRef: string; name: string; powerState: string },
  phase?: Phase,
): Promise<StepOutcome | undefined> {
  if (vm.powerState === "poweredOff") return Promise.resolve(undefined);
  return startTask(
    ctx,
    vc,
    "PowerOff",
    () => vc.startPower(vm.moRef, false),
    `Powering off VM ${vm.name} to delete it.`,
    phase,
  );
}

// The one-task-per-server bookkeeping of the steps: a task recorded, running, ended, failed, gone.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { TaskState } from "../../src/vsphere/task-state.js";
import {
  recheckSeconds,
  startTask,
  taskInFlight,
  TASK_RECHECK_SECONDS,
  type InFlightTask,
  type TaskPort,
} from "../../src/reconcile/engine/vsphere-task.js";
import { StepError } from "../../src/errors.js";
import { stepContext } from "../support/step-fakes.js";

test("recheck: soon after a task started, then less often, at most every 15 s", () => {
  const at = (secondsAgo: number) => new Date(Date.now() - secondsAgo * 1000).toISOString();
  assert.equal(recheckSeconds(at(0)), 1);
  assert.equal(recheckSeconds(at(20)), 4);
  assert.equal(recheckSeconds(at(3600)), TASK_RECHECK_SECONDS);
  assert.equal(recheckSeconds("not a time"), 1);
  // A task whose end shows in its VM wakes its key: later, and doubling.
  assert.equal(recheckSeconds(at(0), Date.now(), true), 3);
  assert.equal(recheckSeconds(at(6), Date.now(), true), 6);
  assert.equal(recheckSeconds(at(3600), Date.now(), true), TASK_RECHECK_SECONDS);
});

/** A vCenter whose tasks are what the test says. */
function fakeVC(states: Record<string, TaskState>, inflight?: InFlightTask) {
  const tracked: string[] = [];
  const port: TaskPort = {
    taskState: async (moRef) => states[moRef] ?? { state: "gone" },
    track: (t, key) => void tracked.push(`${key} ${t.moRef}`),
    inFlight: () => inflight,
    forget: () => undefined,
  };
  return { port, tracked };
}

const recorded = (operation: string, moRef = "task-7") => ({
  vm: { moRef: "vm-1", task: { operation, moRef, startedAt: "2026-11-27T00:00:00Z" } },
});

test("taskInFlight: nothing recorded → the steps go on", async () => {
  const ctx = stepContext({});
  assert.equal(await taskInFlight(ctx, fakeVC({}).port), undefined);
  assert.equal(ctx.finished, undefined);
});

test("taskInFlight: a running task is a wait that its end cuts short, and its owner is tracked", async () => {
  const ctx = stepContext(recorded("PowerOn"));
  const vc = fakeVC({ "task-7": { state: "running" } });
  const out = await taskInFlight(ctx, vc.port);
  assert.equal(out?.done, false);
  assert.equal(out && !out.done && out.waitSeconds, TASK_RECHECK_SECONDS, "started long ago");
  assert.equal(out && !out.done && out.reason, "PoweringOn");
  assert.deepEqual(vc.tracked, ["n/w task-7"]);
  assert.equal(ctx.status.vm?.task?.moRef, "task-7", "still recorded");
});

const ends: [string, string, TaskState, string | undefined, string | undefined][] = [
  // operation, case, task state, expected reason (undefined: goes on), condition
  ["CreateVM", "success", { state: "success" }, undefined, undefined],
  ["Destroy", "gone (restart, vCenter forgot it)", { state: "gone" }, undefined, undefined],
  [
    "PowerOn",
    "someone else powered it on",
    { state: "error", fault: "InvalidPowerState", message: "" },
    undefined,
    undefined,
  ],
  [
    "DeleteISO",
    "file already gone",
    { state: "error", fault: "FileNotFound", message: "" },
    undefined,
    undefined,
  ],
  [
    "CreateVM",
    "datastore full",
    { state: "error", fault: "NoDiskSpace", message: "no space" },
    "DatastoreFull",
    "VMCreated",
  ],
  [
    "CreateVM",
    "name taken",
    { state: "error", fault: "DuplicateName", message: "" },
    "VMNameConflict",
    "VMCreated",
  ],
  [
    "PowerOn",
    "no capacity",
    { state: "error", fault: "InsufficientMemoryResourcesFault", message: "" },
    "InsufficientResources",
    "Installed",
  ],
  [
    "DisconnectBootNIC",
    "refused",
    { state: "error", fault: "InvalidDeviceSpec", message: "bad" },
    "VSphereError",
    "BootNICDisconnected",
  ],
];

for (const [operation, what, state, reason, cond] of ends) {
  test(`taskInFlight: ${operation} ended (${what}) → ${reason ?? "cleared, steps go on"}`, async () => {
    const ctx = stepContext(recorded(operation));
    const run = taskInFlight(ctx, fakeVC({ "task-7": state }).port);
    if (!reason) {
      assert.equal(await run, undefined);
    } else {
      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof StepError);
        assert.equal(err.reason, reason);
        assert.equal(err.options.condition, cond);
        return true;
      });
    }
    assert.equal(ctx.status.vm?.task, undefined, "the record is cleared either way");
    assert.equal(ctx.finished, operation);
  });
}

test("taskInFlight: a task whose record did not reach status is still found in memory", async () => {
  const ctx = stepContext({});
  const vc = fakeVC(
    { "task-8": { state: "running" } },
    { operation: "CreateVM", moRef: "task-8", startedAt: "2026-11-27T00:00:00Z" },
  );
  const out = await taskInFlight(ctx, vc.port);
  assert.equal(out?.done, false);
});

test("taskInFlight: a task started after the one status still shows is the one waited for", async () => {
  // Status (its write failed, or the cache is behind) still shows CreateVM task-7, which ended;
  // this process has started FinishVM task-8 since: no second FinishVM while it runs.
  const ctx = stepContext(recorded("CreateVM"));
  const vc = fakeVC(
    { "task-7": { state: "success" }, "task-8": { state: "running" } },
    { operation: "FinishVM", moRef: "task-8", startedAt: "2026-11-27T00:00:01Z" },
  );
  const out = await taskInFlight(ctx, vc.port);
  assert.equal(out?.done, false);
  assert.deepEqual(vc.tracked, ["n/w task-8"]);
  assert.equal(ctx.finished, undefined, "CreateVM's end is not read again");
});

test("startTask: records the task; nothing to do → undefined; the same change twice → VSphereError", async () => {
  const vc = fakeVC({});
  const ctx = stepContext({ vm: { moRef: "vm-1" } });
  assert.equal(await startTask(ctx, vc.port, "Resize", async () => undefined, "m"), undefined);
  assert.equal(ctx.status.vm?.task, undefined);
  const out = await startTask(ctx, vc.port, "Resize", async () => "task-3", "Resizing.");
  assert.equal(out?.done, false);
  const vm = ctx.status.vm as { moRef?: string; task?: { moRef: string } };
  assert.equal(vm.task?.moRef, "task-3");
  assert.equal(vm.moRef, "vm-1", "the rest of status.vm is kept");
  assert.deepEqual(vc.tracked, ["n/w task-3"]);
  // vCenter said the resize succeeded, yet the VM still has the old size: tried again, slowly.
  const again = stepContext({});
  again.finished = "Resize";
  await assert.rejects(
    startTask(again, vc.port, "Resize", async () => "task-4", "m"),
    (err: unknown) =>
      err instanceof StepError &&
      err.reason === "VSphereError" &&
      err.options.retryAfterSeconds === 30,
  );
  assert.equal(again.status.vm?.task?.moRef, "task-4", "the new task is tracked");
  // Done and not needed again: fine.
  assert.equal(await startTask(again, vc.port, "Resize", async () => undefined, "m"), undefined);
});

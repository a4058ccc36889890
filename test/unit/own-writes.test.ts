// A reconcile woken before the watch brings back the status it wrote (the watch down, its relist
// backing off) goes on from what it wrote, not from the cache's older copy: the chaos campaign
// saw a new leader start FinishVM and PowerOn twice each, from a cache that still showed the
// CreateVM task that had ended before them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { VirtualServer, VirtualServerClass } from "../../src/api/types.js";
import type { Result } from "../../src/controller/controller.js";
import type { EventRecorder } from "../../src/controller/events.js";
import { KubeError, type Kube } from "../../src/controller/kube.js";
import { parseHostname, partLabels } from "../../src/naming/hostname.js";
import { LIST_SHARD_LABEL, listShardOf } from "../../src/api/list-shards.js";
import { intentWritten, wait, type Step } from "../../src/reconcile/engine/context.js";
import { RetryLater, VirtualServerReconciler } from "../../src/reconcile/engine/virtualserver.js";
import { StepError } from "../../src/errors.js";

const LABELS = {
  ...partLabels(parseHostname("web-prod-1.example.test")),
  [LIST_SHARD_LABEL]: listShardOf("web-prod-1"),
};

/**
 * An API server that bumps resourceVersion on every write and refuses stale ones (409). The
 * object starts with `meta` over a claimed, labelled one; `writes` lists the writes that went in.
 */
function world(meta: Partial<VirtualServer["metadata"]> = {}) {
  const writes: ("metadata" | "status")[] = [];
  let stored: VirtualServer = {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: {
      name: "web-prod-1",
      namespace: "ns",
      uid: "u1",
      generation: 1,
      resourceVersion: "1",
      finalizers: ["provisioning.vsop.dev/vm"],
      // As vsop labels it, so that no metadata write comes first.
      labels: LABELS,
      ...meta,
    },
    spec: { hostname: "web-prod-1.example.test", className: "c" },
  };
  let cache = stored;
  const write = (body: VirtualServer, change: (vs: VirtualServer) => VirtualServer) => {
    if (body.metadata.resourceVersion !== stored.metadata.resourceVersion)
      throw new KubeError(409, "Conflict", "the object has been modified", "PUT", "/x");
    const rv = String(Number(stored.metadata.resourceVersion) + 1);
    stored = change({ ...stored, metadata: { ...stored.metadata, resourceVersion: rv } });
    return structuredClone(stored);
  };
  const kube = {
    replace: async (_p: string, body: VirtualServer) =>
      write(body, (vs) => (writes.push("status"), { ...vs, status: body.status })),
    mergePatch: async (_p: string, patch: { metadata: VirtualServer["metadata"] }) =>
      write(
        { metadata: patch.metadata } as VirtualServer,
        (vs) => (
          writes.push("metadata"),
          {
            ...vs,
            metadata: {
              ...vs.metadata,
              ...patch.metadata,
              resourceVersion: vs.metadata.resourceVersion,
            },
          }
        ),
      ),
  } as unknown as Kube;
  return {
    kube,
    writes,
    stored: () => stored,
    cached: () => cache,
    /** The watch delivers what is stored. */
    sync: () => (cache = structuredClone(stored)),
    /** Someone else writes: the status without its task record. */
    edit: () => {
      stored = write(stored, (vs) => ({ ...vs, status: { ...vs.status, vm: {} } }));
    },
  };
}

/** A step that starts a (vSphere-like) task once and waits while it is recorded in status. */
function taskStep() {
  let starts = 0;
  const step: Step = {
    name: "vm",
    run: async (ctx) => {
      if (!ctx.status.vm?.task) {
        starts++;
        ctx.status.vm = {
          task: {
            operation: "PowerOn",
            moRef: `task-${starts}`,
            startedAt: "2026-11-27T00:00:00Z",
          },
        };
      }
      return {
        done: false,
        waitSeconds: 15,
        phase: "Creating",
        reason: "PoweringOn",
        message: "on",
      };
    },
  };
  return { step, starts: () => starts };
}

function reconciler(w: ReturnType<typeof world>, step: Step) {
  const r = new VirtualServerReconciler({
    kube: w.kube,
    recorder: { record: async () => undefined } as unknown as EventRecorder,
    logger: pino({ level: "silent" }),
    getServer: () => w.cached(),
    getClass: () => ({ metadata: { name: "c" }, spec: {} }) as unknown as VirtualServerClass,
    steps: [step],
  });
  return (): Promise<Result> =>
    r.reconcile("ns/web-prod-1").catch((e: unknown) => {
      if (!(e instanceof RetryLater)) throw e;
      return {};
    });
}

test("a reconcile before the watch catches up goes on from its own write: no second task", async () => {
  const w = world();
  const t = taskStep();
  const reconcile = reconciler(w, t.step);
  await reconcile(); // the status with task-1
  await reconcile(); // the cache still shows resourceVersion 1
  await reconcile();
  assert.equal(t.starts(), 1, "the task is started once");
  w.sync();
  await reconcile();
  assert.equal(t.starts(), 1);
});

test("once the cache shows a version it did not write over, the cache counts", async () => {
  const w = world();
  const t = taskStep();
  const reconcile = reconciler(w, t.step);
  await reconcile(); // status with task-1
  w.edit(); // someone else (another leader) cleared the task record
  w.sync();
  await reconcile();
  assert.equal(t.starts(), 2, "the newer object from the cache is what the steps see");
});

/** A step that first writes down its intent, then starts its task on a later pass. */
function intentStep(goOn: boolean) {
  const passes: (string | undefined)[] = [];
  const step: Step = {
    name: "vm",
    run: async (ctx) => {
      passes.push(ctx.vs.metadata.resourceVersion);
      if (!ctx.status.vm?.name) {
        ctx.status.vm = { name: "web-prod-1" };
        return goOn
          ? intentWritten("Creating", "Creating", "c")
          : wait(0, "Creating", "Creating", "c");
      }
      ctx.status.vm = { ...ctx.status.vm, moRef: "vm-1" };
      return wait(15, "Creating", "Creating", "c");
    },
  };
  return { step, passes };
}

test("an intent written with goOn goes on in the same reconcile, from the written object", async () => {
  const w = world();
  const t = intentStep(true);
  const result = await reconciler(w, t.step)();
  assert.deepEqual(t.passes, ["1", "2"], "the second pass sees the intent it wrote");
  assert.equal(w.cached().metadata.resourceVersion, "1", "the watch has not brought it yet");
  assert.deepEqual(result, { requeueAfterSeconds: 15 }, "the result is the second pass's");
  w.sync();
  assert.equal(w.cached().status?.vm?.moRef, "vm-1");
});

test("a 0 s wait without goOn is requeued, and so is a goOn whose pass wrote nothing", async () => {
  const w = world();
  const plain = intentStep(false);
  assert.deepEqual(await reconciler(w, plain.step)(), { requeueAfterSeconds: 0 });
  assert.equal(plain.passes.length, 1);

  let passes = 0;
  const step: Step = {
    name: "vm",
    run: async () => {
      passes++;
      return intentWritten("Creating", "Creating", "c");
    },
  };
  const reconcile = reconciler(world(), step);
  await reconcile(); // writes phase and Ready once, then goes on once
  assert.equal(passes, 2);
  assert.deepEqual(await reconcile(), { requeueAfterSeconds: 0 });
  assert.equal(passes, 3, "nothing new was written: one pass");
});

const UNCLAIMED = { finalizers: undefined, labels: undefined };

test("the finalizer is put on in the write before the first act, with the labels; not before", async () => {
  // A server that fails before it asks for a VM: labelled, not claimed (deleted at once).
  const refused = world(UNCLAIMED);
  const failing: Step = {
    name: "naming",
    run: async () => {
      throw new StepError("NameNotResolvable", "no such name", { condition: "NameResolved" });
    },
  };
  await reconciler(refused, failing)();
  assert.deepEqual(refused.writes, ["metadata", "status"]);
  assert.deepEqual(refused.stored().metadata.labels, LABELS);
  assert.equal(refused.stored().metadata.finalizers, undefined);

  // One that acts: the finalizer is there when it does; two writes in all, one pass.
  const w = world(UNCLAIMED);
  const seen: (string[] | undefined)[] = [];
  const acting: Step = {
    name: "vm",
    run: async (ctx) => {
      await ctx.claim!();
      seen.push(w.stored().metadata.finalizers);
      ctx.status.vm = {
        name: "web-prod-1",
        task: { operation: "CreateVM", moRef: "task-1", startedAt: "x" },
      };
      return wait(15, "Creating", "Creating", "c");
    },
  };
  const reconcile = reconciler(w, acting);
  await reconcile();
  assert.deepEqual(seen, [["provisioning.vsop.dev/vm"]]);
  assert.deepEqual(w.writes, ["metadata", "status"]);
  assert.deepEqual(w.stored().metadata.labels, LABELS);
  assert.equal(w.stored().status?.vm?.task?.moRef, "task-1");
  w.sync();
  await reconcile();
  assert.deepEqual(w.writes, ["metadata", "status"], "claimed once: no write when nothing changed");
});

test("a claim that finds the object changed ends the pass: no act, no status write", async () => {
  const w = world(UNCLAIMED);
  let acted = false;
  const step: Step = {
    name: "vm",
    run: async (ctx) => {
      await ctx.claim!();
      acted = true;
      return wait(15, "Creating", "Creating", "c");
    },
  };
  w.edit(); // someone else wrote; the cache still shows resourceVersion 1
  assert.deepEqual(await reconciler(w, step)(), {});
  assert.equal(acted, false);
  assert.equal(w.stored().metadata.finalizers, undefined);
  assert.deepEqual(w.writes, [], "nothing was written");
});

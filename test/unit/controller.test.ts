import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkQueue } from "../../src/controller/queue.js";
import { setCondition } from "../../src/controller/conditions.js";
import { Controller } from "../../src/controller/controller.js";
import { jsonEqual } from "../../src/controller/json-equal.js";
import { createLogger } from "../../src/observability/logger.js";
import { currentSignal } from "../../src/abort.js";

test("a key is queued once however often it is added", async () => {
  const q = new WorkQueue();
  q.add("a");
  q.add("a");
  q.add("b");
  assert.equal(q.length, 2);
  assert.equal(await q.get(), "a");
  assert.equal(await q.get(), "b");
});

test("a key added while in flight waits until done, never goes to a second worker", async () => {
  const q = new WorkQueue();
  q.add("a");
  const k = await q.get();
  q.add("a");
  assert.equal(q.length, 0, "not handed out while processing");
  let second: string | undefined;
  void q.get().then((v) => (second = v));
  await new Promise((r) => setImmediate(r));
  assert.equal(second, undefined);
  q.done(k!);
  await new Promise((r) => setImmediate(r));
  assert.equal(second, "a");
});

test("backoff doubles per failure up to the cap and forget resets it", () => {
  const q = new WorkQueue({ baseMs: 100, maxMs: 500 });
  assert.deepEqual(
    [1, 2, 3, 4, 5].map(() => q.addRateLimited("k")),
    [100, 200, 400, 500, 500],
  );
  q.forget("k");
  assert.equal(q.addRateLimited("k"), 100);
  q.shutDown();
});

test("the controller never runs one key on two workers at once", async () => {
  const q = new WorkQueue({ baseMs: 1, maxMs: 1 });
  let running = 0;
  let maxRunning = 0;
  let calls = 0;
  const c = new Controller(
    q,
    async () => {
      running++;
      calls++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return {};
    },
    { workers: 8, resyncSeconds: 3600, logger: createLogger("silent"), keys: () => [] },
  );
  c.start();
  for (let i = 0; i < 50; i++) {
    q.add("same");
    await new Promise((r) => setTimeout(r, 1));
  }
  await new Promise((r) => setTimeout(r, 50));
  await c.stop();
  assert.equal(maxRunning, 1);
  assert.ok(calls >= 2);
});

test("lastTransitionTime changes only when the status flips", () => {
  let t = 0;
  const now = () => `T${++t}`;
  let cs = setCondition([], "Ready", "False", "A", "a", 1, now);
  assert.equal(cs[0]!.lastTransitionTime, "T1");
  cs = setCondition(cs, "Ready", "False", "B", "b", 2, now);
  assert.equal(cs[0]!.lastTransitionTime, "T1");
  assert.equal(cs[0]!.reason, "B");
  cs = setCondition(cs, "Ready", "True", "C", "c", 2, now);
  assert.equal(cs[0]!.lastTransitionTime, "T2");
  assert.equal(cs[0]!.observedGeneration, 2);
});

test("a reconcile past its deadline is aborted (its signal fires) and retried", async () => {
  const q = new WorkQueue({ baseMs: 1, maxMs: 1 });
  const seen: string[] = [];
  const c = new Controller(
    q,
    async () => {
      const signal = currentSignal()!;
      seen.push(signal.aborted ? "aborted at start" : "running");
      if (seen.length > 1) return {};
      // A request that would never end on its own, cancelled by the signal.
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason)),
      );
      return {};
    },
    {
      workers: 1,
      resyncSeconds: 3600,
      logger: createLogger("silent"),
      keys: () => [],
      reconcileTimeoutMs: 50,
    },
  );
  c.start();
  q.add("k");
  const deadline = Date.now() + 2000;
  while (seen.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await c.stop();
  assert.deepEqual(seen, ["running", "running"], "aborted after 50 ms, then retried afresh");
});

test("stop() aborts in-flight reconciles instead of waiting for them", async () => {
  const q = new WorkQueue({ baseMs: 1, maxMs: 1 });
  let aborted = false;
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  const c = new Controller(
    q,
    async () => {
      started();
      const signal = currentSignal()!;
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => {
          aborted = true;
          reject(signal.reason);
        }),
      );
      return {};
    },
    { workers: 1, resyncSeconds: 3600, logger: createLogger("silent"), keys: () => [] },
  );
  c.start();
  q.add("k");
  await running;
  const t0 = Date.now();
  await c.stop();
  assert.ok(aborted, "the reconcile saw its signal fire");
  assert.ok(Date.now() - t0 < 1000, "stop did not wait for the 60 s deadline");
});

test("jsonEqual: key order and undefined fields do not count; values, arrays and nesting do", () => {
  const a = { phase: "Ready", vm: { moRef: "vm-1", nics: [{ role: "service", connected: true }] } };
  assert.ok(
    jsonEqual(a, {
      vm: { nics: [{ connected: true, role: "service" }], moRef: "vm-1" },
      phase: "Ready",
    }),
  );
  assert.ok(jsonEqual({ ...a, install: undefined }, a));
  assert.ok(jsonEqual([undefined, 1], [null, 1]));
  assert.ok(!jsonEqual(a, { ...a, phase: "Failed" }));
  assert.ok(!jsonEqual(a, { ...a, extra: 0 }));
  assert.ok(!jsonEqual({ ...a, extra: 0 }, a));
  assert.ok(!jsonEqual({ n: [1, 2] }, { n: [2, 1] }));
  assert.ok(!jsonEqual({ n: [1] }, { n: { 0: 1 } }));
  assert.ok(!jsonEqual({ n: 1 }, { n: "1" }));
  assert.ok(!jsonEqual({ v: { deep: [{ x: 1 }] } }, { v: { deep: [{ x: 2 }] } }));
  assert.ok(!jsonEqual({ a: null }, {}));
});

// Puppet run decisions without a node: recovering an intent after a restart, the run limit per
// class, splay; and the step acting on them (intent before the runonce, a restart that finds it).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import { McoTimeout } from "../../src/mcollective/errors.js";
import {
  recoverRun,
  RunSlots,
  runInFlight,
  splayOffsetSeconds,
  type NodeRunState,
} from "../../src/reconcile/steps/puppet-runs.js";
import { PendingCalls } from "../../src/reconcile/engine/pending-calls.js";
import { periodicRunDue, puppetStep, runDue } from "../../src/reconcile/steps/puppet-step.js";
import type { StepOutcome } from "../../src/reconcile/engine/context.js";
import { callbacks, fakeNode, stepContext } from "../support/step-fakes.js";

const HOST = "web-prod-1.example.test";
const T = Date.parse("2026-11-27T04:00:00.000Z");
const S = T / 1000;

test("recoverRun: did the run of an intent found on restart happen?", async (t) => {
  const cases: {
    name: string;
    node: NodeRunState;
    /** vsop's clock when the reply came. */
    receivedAt?: number;
    lastRunAt?: string;
    expect: ReturnType<typeof recoverRun>;
  }[] = [
    {
      name: "never ran, not applying: not sent (or lost)",
      node: { applying: false, lastrun: 0, sinceLastrun: null },
      expect: { ran: false },
    },
    {
      name: "applying now: the run is under way",
      node: { applying: true, lastrun: S - 3600, sinceLastrun: 3610 },
      receivedAt: T + 10_000,
      expect: { ran: true, requestedAt: S, applying: true },
    },
    {
      name: "a run finished after the intent",
      node: { applying: false, lastrun: S + 4, sinceLastrun: 6 },
      receivedAt: T + 10_000,
      expect: { ran: true, requestedAt: S, applying: false },
    },
    {
      name: "the last run is the one before the intent",
      node: { applying: false, lastrun: S - 60, sinceLastrun: 70 },
      receivedAt: T + 10_000,
      lastRunAt: new Date((S - 60) * 1000).toISOString(),
      expect: { ran: false },
    },
    {
      name: "a run before the intent that vsop never recorded (node clock in step)",
      node: { applying: false, lastrun: S - 30, sinceLastrun: 40 },
      receivedAt: T + 10_000,
      expect: { ran: false },
    },
    {
      name: "node clock 1 h behind: the run after the intent still counts",
      node: { applying: false, lastrun: S - 3600 + 4, sinceLastrun: 6 },
      receivedAt: T + 10_000,
      expect: { ran: true, requestedAt: S - 3600, applying: false },
    },
    {
      name: "node clock 1 h ahead: a run before the intent is not taken for it",
      node: { applying: false, lastrun: S + 3600 - 30, sinceLastrun: 40 },
      receivedAt: T + 10_000,
      expect: { ran: false },
    },
    {
      name: "node clock 1 h ahead: the run after the intent counts",
      node: { applying: false, lastrun: S + 3600 + 4, sinceLastrun: 6 },
      receivedAt: T + 10_000,
      lastRunAt: new Date((S + 3600 - 600) * 1000).toISOString(),
      expect: { ran: true, requestedAt: S + 3600, applying: false },
    },
  ];
  for (const c of cases)
    await t.test(c.name, () => {
      assert.deepEqual(recoverRun(T, c.node, c.receivedAt ?? T + 5000, c.lastRunAt), c.expect);
    });
});

test("runInFlight: from status alone", async (t) => {
  const cases: { name: string; p: VirtualServerStatus["puppet"]; expect: boolean }[] = [
    { name: "no puppet status", p: undefined, expect: false },
    { name: "never requested", p: {}, expect: false },
    {
      name: "intent written",
      p: {
        pendingRun: { startedAt: "x", reason: "first run", environment: "production", tags: "" },
      },
      expect: true,
    },
    { name: "requested, not finished", p: { requestedAt: "2026-01-01T00:00:00Z" }, expect: true },
    {
      name: "finished",
      p: { requestedAt: "2026-01-01T00:00:00Z", finishedFor: "2026-01-01T00:00:00Z" },
      expect: false,
    },
    {
      name: "old status: finished by the times",
      p: { requestedAt: "2026-01-01T00:00:00Z", lastRunAt: "2026-01-01T00:00:05Z" },
      expect: false,
    },
  ];
  for (const c of cases) await t.test(c.name, () => assert.equal(runInFlight(c.p), c.expect));
});

test("splay: a fixed offset per server within the splay, spread over it", () => {
  assert.equal(splayOffsetSeconds("uid-1", 0), 0);
  const a = splayOffsetSeconds("uid-1", 600);
  assert.equal(splayOffsetSeconds("uid-1", 600), a, "the same every time");
  const buckets = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const o = splayOffsetSeconds(`3f1c${i}-uid`, 600);
    assert.ok(o >= 0 && o < 600, `${o} within [0, 600)`);
    buckets.add(Math.floor(o / 60));
  }
  assert.equal(buckets.size, 10, "200 servers fill every minute of a 10 min splay");
});

test("periodic runs: due after the interval plus the server's splay", async (t) => {
  const lastRunAt = new Date(Date.now() - 3600_000 - 30_000).toISOString();
  const status = (): VirtualServerStatus => ({
    puppet: {
      requestedAt: lastRunAt,
      finishedFor: lastRunAt,
      lastRunAt,
      environment: "production",
      tags: "",
      failed: 0,
    },
  });
  const cases: { name: string; cls: Record<string, unknown>; uid: string; due: boolean }[] = [
    { name: "no interval", cls: {}, uid: "a", due: false },
    { name: "interval passed, no splay", cls: { puppet: { interval: "1h" } }, uid: "a", due: true },
    {
      name: "interval passed, inside a 10 min splay",
      cls: { puppet: { interval: "1h", splay: "10m" } },
      uid: "", // chosen below: an offset over 30 s
      due: false,
    },
  ];
  for (const c of cases)
    await t.test(c.name, () => {
      const ctx = stepContext(status(), c.cls);
      let uid = c.uid;
      if (!uid) {
        for (let i = 0; !uid; i++) if (splayOffsetSeconds(`u${i}`, 600) > 60) uid = `u${i}`;
      }
      ctx.vs.metadata.uid = uid;
      assert.equal(runDue(ctx) === "interval due", c.due);
      const due = periodicRunDue(ctx);
      if (c.cls.puppet) {
        const expected =
          Date.parse(lastRunAt) + (3600 + splayOffsetSeconds(uid, c.cls.puppet ? 600 : 0)) * 1000;
        if ((c.cls.puppet as { splay?: string }).splay) assert.equal(due, expected);
        else assert.equal(due, Date.parse(lastRunAt) + 3600_000);
      } else assert.equal(due, undefined);
    });
});

test("RunSlots: at most the limit in flight per group, the oldest waiter woken", async (t) => {
  await t.test("acquire up to the limit, then refuse; a holder keeps its slot", () => {
    const woken: string[] = [];
    const slots = new RunSlots({ wake: (k) => woken.push(k) });
    assert.equal(slots.acquire("c", "a", 2, 60_000), true);
    assert.equal(slots.acquire("c", "b", 2, 60_000), true);
    assert.equal(slots.acquire("c", "a", 2, 60_000), true, "a already holds one");
    assert.equal(slots.acquire("c", "x", 2, 60_000), false);
    assert.equal(slots.acquire("c", "y", 2, 60_000), false);
    assert.equal(slots.acquire("other", "z", 2, 60_000), true, "groups are separate");
    assert.equal(slots.held("c"), 2);
    slots.release("a");
    assert.deepEqual(woken, ["x"], "the oldest waiter");
    assert.equal(slots.acquire("c", "x", 2, 60_000), true);
    slots.release("b");
    assert.deepEqual(woken, ["x", "y"]);
    slots.release("nobody");
    assert.deepEqual(woken, ["x", "y"]);
  });
  await t.test("a run found in flight counts beyond the limit", () => {
    const slots = new RunSlots({ wake: () => undefined });
    slots.acquire("c", "a", 1, 60_000);
    slots.hold("c", "b", 60_000);
    assert.equal(slots.held("c"), 2);
    assert.equal(slots.acquire("c", "x", 2, 60_000), false, "2 of 2 in flight");
  });
  await t.test("a slot expires; its waiter is woken", () => {
    let now = 0;
    const woken: string[] = [];
    const slots = new RunSlots({ wake: (k) => woken.push(k), now: () => now });
    slots.acquire("c", "a", 1, 1000);
    assert.equal(slots.acquire("c", "b", 1, 1000), false);
    now = 1500;
    assert.equal(slots.held("c"), 0);
    assert.equal(slots.acquire("c", "c", 1, 1000), true, "a's slot expired");
    assert.deepEqual(woken, ["b"]);
  });
  await t.test("after a restart, runs in flight by status count before new ones", () => {
    const asked: string[] = [];
    const slots = new RunSlots({
      wake: () => undefined,
      inFlight: (group) => {
        asked.push(group);
        return group === "c" ? ["n/a", "n/b"] : [];
      },
    });
    assert.equal(slots.acquire("c", "n/x", 2, 60_000), false);
    assert.equal(slots.acquire("c", "n/a", 2, 60_000), true, "a holds its slot");
    slots.release("n/b");
    assert.equal(slots.acquire("c", "n/x", 2, 60_000), true);
    assert.deepEqual(asked, ["c"], "asked once per group");
  });
});

const waiting = (o: StepOutcome) =>
  o.done ? { done: true } : { reason: o.reason, seconds: o.waitSeconds };

/** A step of one operator process: the node, the call table, the slots, shared or not. */
function proc(node = fakeNode(10_000), slots?: RunSlots) {
  const calls = new PendingCalls({ wake: () => undefined });
  const step = puppetStep(node.pool, calls, async () => undefined, undefined, slots);
  return { node, calls, step };
}

test("intent first: nothing is sent until status shows the intent", async () => {
  const { node, step } = proc();
  const ctx = stepContext({});
  assert.deepEqual(waiting(await step.run(ctx)), { reason: "PuppetRunning", seconds: 0 });
  const intent = ctx.status.puppet?.pendingRun;
  assert.equal(intent?.reason, "first run");
  assert.equal(node.received.length, 0);
  // The status write failed: the next reconcile sees the status before it and decides again,
  // still sending nothing.
  const lost = stepContext({});
  await step.run(lost);
  assert.equal(node.received.length, 0);
  assert.notEqual(lost.status.puppet?.pendingRun?.startedAt, undefined);
  // Status shows the intent this process wrote: sent, once.
  await step.run(lost);
  await step.run(lost);
  assert.deepEqual(
    node.received.map((r) => r.action),
    ["runonce"],
  );
});

test("a restart with an intent in status asks the node before sending", async (t) => {
  const cases: {
    name: string;
    status: (intentAt: number) => Record<string, unknown>;
    sent: boolean;
  }[] = [
    {
      name: "the killed process had sent it and the run finished",
      status: (at) => ({ applying: false, lastrun: Math.floor(at / 1000) + 3, sinceLastrun: 1 }),
      sent: false,
    },
    {
      name: "the run is applying",
      status: () => ({ applying: true, lastrun: 0, sinceLastrun: null }),
      sent: false,
    },
    {
      name: "the killed process died before sending",
      status: () => ({ applying: false, lastrun: 0, sinceLastrun: null }),
      sent: true,
    },
  ];
  for (const c of cases)
    await t.test(c.name, async () => {
      const first = proc();
      const ctx = stepContext({});
      await first.step.run(ctx); // the intent, written
      if (c.sent) {
        // killed before the next reconcile
      } else {
        await first.step.run(ctx); // sent; killed before the reply was recorded
        assert.equal(first.node.received.length, 1);
      }
      const intentAt = Date.parse(ctx.status.puppet!.pendingRun!.startedAt);
      await new Promise((r) => setTimeout(r, 5));
      const second = proc();
      await second.step.run(ctx);
      assert.deepEqual(
        second.node.received.map((r) => r.action),
        ["status"],
        "the node is asked first",
      );
      second.node.received[0]!.resolve(c.status(intentAt));
      await callbacks();
      const outcome = await second.step.run(ctx);
      const actions = second.node.received.map((r) => r.action);
      if (c.sent) {
        assert.deepEqual(actions, ["status", "runonce"]);
        assert.ok(ctx.status.puppet?.pendingRun, "recorded only when the node took it");
      } else {
        assert.deepEqual(actions, ["status"], "no second runonce");
        assert.equal(ctx.status.puppet?.pendingRun, undefined);
        assert.ok(ctx.status.puppet?.requestedAt);
        assert.deepEqual(waiting(outcome), { reason: "PuppetRunning", seconds: 3 });
      }
    });
});

test("maxConcurrentRuns: a server waits for a slot and is woken when one frees", async () => {
  const woken: string[] = [];
  const slots = new RunSlots({ wake: (k) => woken.push(k) });
  const p = proc(fakeNode(10_000), slots);
  const cls = { puppet: { maxConcurrentRuns: 1 } };
  const a = stepContext({}, cls);
  const b = stepContext({}, cls);
  b.vs.metadata.name = "b";
  await p.step.run(a);
  const queued = await p.step.run(b);
  assert.deepEqual(waiting(queued), { reason: "PuppetRunQueued", seconds: 10 });
  assert.match(
    (queued as { message: string }).message,
    /1 Puppet runs of class c .*maxConcurrentRuns 1/,
  );
  assert.equal(b.status.puppet?.pendingRun, undefined, "no intent while queued");
  // a's run: sent, accepted, finished.
  await p.step.run(a);
  p.node.received[0]!.resolve({
    identity: HOST,
    summary: "",
    initiatedAt: Math.floor(Date.now() / 1000),
  });
  await callbacks();
  await p.step.run(a);
  await p.step.run(a);
  assert.equal(p.node.received[1]!.action, "lastRunSummary");
  p.node.received[1]!.resolve({
    lastrun: Math.floor(Date.now() / 1000) + 1,
    failedResources: 0,
    changedResources: 1,
    outOfSyncResources: 1,
    totalResources: 3,
    failedResourceNames: [],
    reportTime: null,
  });
  await callbacks();
  assert.deepEqual(await p.step.run(a), { done: true });
  assert.deepEqual(woken, ["n/b"], "the waiting server is woken");
  await p.step.run(b);
  assert.ok(b.status.puppet?.pendingRun);
});

test("slots scarce: a node never heard from is probed first and holds no slot while silent", async () => {
  const slots = new RunSlots({ wake: () => undefined });
  const p = proc(fakeNode(10_000), slots);
  const cls = { puppet: { maxConcurrentRuns: 4 } };
  for (const other of ["n/x", "n/y"]) slots.acquire("c", other, 4, 60_000); // half are taken
  const ctx = stepContext({}, cls);
  await p.step.run(ctx); // the intent, written without a slot
  assert.ok(ctx.status.puppet?.pendingRun);
  assert.equal(slots.holds("c", "n/w"), false);
  const asking = await p.step.run(ctx);
  assert.deepEqual(
    p.node.received.map((r) => r.action),
    ["status"],
    "asked whether it answers, not to run",
  );
  assert.match((asking as { message: string }).message, /answers through MCollective/);
  assert.equal(slots.held("c"), 2, "no slot while the probe is out");
  // Silent: the probe times out; still no slot, and the failure is reported as usual.
  p.node.received[0]!.reject(new McoTimeout("puppet", "status", "r", 10_000, [HOST]));
  await callbacks();
  await assert.rejects(p.step.run(ctx), (e: unknown) => e instanceof StepError);
  assert.equal(slots.held("c"), 2);
  // It answers the next probe: now it takes a slot and is asked to run.
  await p.step.run(ctx);
  p.node.received[1]!.resolve({ applying: false, lastrun: 0, sinceLastrun: null });
  await callbacks();
  await p.step.run(ctx);
  assert.deepEqual(
    p.node.received.map((r) => r.action),
    ["status", "status", "runonce"],
  );
  assert.equal(slots.holds("c", "n/w"), true);
});

test("slots scarce: a node that answered its probe and then waited for a slot is not probed again", async () => {
  const slots = new RunSlots({ wake: () => undefined });
  const p = proc(fakeNode(10_000), slots);
  const ctx = stepContext({}, { puppet: { maxConcurrentRuns: 2 } });
  slots.acquire("c", "n/x", 2, 60_000);
  await p.step.run(ctx); // intent, no slot
  await p.step.run(ctx); // probe
  p.node.received[0]!.resolve({ applying: false, lastrun: 0, sinceLastrun: null });
  await callbacks();
  slots.acquire("c", "n/y", 2, 60_000); // the last slot goes meanwhile
  assert.equal(waiting(await p.step.run(ctx)).reason, "PuppetRunQueued");
  slots.release("n/y");
  await p.step.run(ctx);
  assert.deepEqual(
    p.node.received.map((r) => r.action),
    ["status", "runonce"],
  );
});

test("slots plentiful: a first run is sent at once (no probe)", async () => {
  const slots = new RunSlots({ wake: () => undefined });
  const p = proc(fakeNode(10_000), slots);
  const ctx = stepContext({}, { puppet: { maxConcurrentRuns: 4 } });
  slots.acquire("c", "n/x", 4, 60_000);
  await p.step.run(ctx);
  await p.step.run(ctx);
  assert.deepEqual(
    p.node.received.map((r) => r.action),
    ["runonce"],
  );
});

test("noop: asked with noop, reported as what would change", async () => {
  const p = proc();
  const ctx = stepContext({});
  ctx.vs.spec.puppet = { noop: true };
  await p.step.run(ctx);
  await p.step.run(ctx);
  assert.deepEqual(p.node.received[0]!.args[1], {
    environment: "production",
    tags: [],
    noop: true,
  });
  const at = Math.floor(Date.now() / 1000);
  p.node.received[0]!.resolve({ identity: HOST, summary: "", initiatedAt: at });
  await callbacks();
  await p.step.run(ctx);
  assert.equal(ctx.status.puppet?.noop, true);
  await p.step.run(ctx);
  p.node.received[1]!.resolve({
    lastrun: at + 2,
    failedResources: 0,
    changedResources: 0,
    outOfSyncResources: 2,
    totalResources: 9,
    failedResourceNames: [],
    reportTime: null,
  });
  await callbacks();
  assert.deepEqual(await p.step.run(ctx), { done: true });
  const c = ctx.status.conditions?.find((x) => x.type === "PuppetApplied");
  assert.equal(c?.reason, "Noop");
  assert.match(c!.message, /changed nothing: 2 of 9 resources would change/);
  // Turning noop off asks for a real run.
  ctx.vs.spec.puppet = {};
  assert.equal(runDue(ctx), "spec.puppet changed");
});

test("a failed run: failed resources and report time in status, the first one named", async () => {
  const p = proc();
  const ctx = stepContext({});
  await p.step.run(ctx);
  await p.step.run(ctx);
  const at = Math.floor(Date.now() / 1000);
  p.node.received[0]!.resolve({ identity: HOST, summary: "", initiatedAt: at });
  await callbacks();
  await p.step.run(ctx);
  await p.step.run(ctx);
  p.node.received[1]!.resolve({
    lastrun: at + 2,
    failedResources: 2,
    changedResources: 1,
    outOfSyncResources: 3,
    totalResources: 9,
    failedResourceNames: ["Exec[always-fails]", "Service[web]"],
    reportTime: "2026-11-27T04:25:27.665929947+00:00",
  });
  await callbacks();
  await assert.rejects(
    p.step.run(ctx),
    (err: unknown) =>
      err instanceof StepError &&
      err.reason === "PuppetRunFailed" &&
      /at 2026-11-27T04:25:27.665Z failed: 1 changed, 2 failed of 9 resources; first failed resource Exec\[always-fails\]/.test(
        err.message,
      ),
  );
  assert.deepEqual(ctx.status.puppet?.failedResources, ["Exec[always-fails]", "Service[web]"]);
  assert.equal(ctx.status.puppet?.reportTime, "2026-11-27T04:25:27.665Z");
});

test("PuppetClient: a reply without the fields vsop acts on is an error, not success", async (t) => {
  const { PuppetClient, PuppetReplyIncomplete } = await import("../../src/mcollective/puppet.js");
  const summary = {
    lastrun: S,
    failed_resources: 0,
    changed_resources: 1,
    total_resources: 9,
    out_of_sync_resources: 1,
  };
  const cases: {
    name: string;
    action: "runonce" | "status" | "lastRunSummary";
    data: Record<string, unknown>;
    missing?: string[];
  }[] = [
    { name: "runonce with initiated_at", action: "runonce", data: { initiated_at: S } },
    {
      name: "runonce without initiated_at",
      action: "runonce",
      data: { summary: "started" },
      missing: ["initiated_at"],
    },
    { name: "summary complete", action: "lastRunSummary", data: summary },
    {
      name: "summary without failed_resources",
      action: "lastRunSummary",
      data: { ...summary, failed_resources: undefined },
      missing: ["failed_resources"],
    },
    {
      name: "summary without time and counts",
      action: "lastRunSummary",
      data: { failed_resources: "0" },
      missing: ["lastrun", "changed_resources", "total_resources"],
    },
    { name: "status complete", action: "status", data: { applying: false, lastrun: 0 } },
    {
      name: "status without applying",
      action: "status",
      data: { lastrun: S },
      missing: ["applying"],
    },
  ];
  for (const c of cases)
    await t.test(c.name, async () => {
      const mco = {
        request: async () => ({
          requestId: "r1",
          replies: [{ sender: HOST, statuscode: 0, statusmsg: "OK", data: c.data }],
        }),
      };
      const client = new PuppetClient(mco as never);
      const call = () =>
        c.action === "runonce"
          ? client.runonce(HOST)
          : c.action === "status"
            ? client.status(HOST)
            : client.lastRunSummary(HOST);
      if (!c.missing) await call();
      else
        await assert.rejects(
          call(),
          (err: unknown) =>
            err instanceof PuppetReplyIncomplete &&
            JSON.stringify(err.missing) === JSON.stringify(c.missing),
        );
    });
});

test("a run past its runTimeout gives its slot back", async () => {
  const slots = new RunSlots({ wake: () => undefined });
  const p = proc(fakeNode(10_000), slots);
  const old = new Date(Date.now() - 31 * 60_000).toISOString();
  const ctx = stepContext({ puppet: { requestedAt: old, environment: "production", tags: "" } });
  await p.step.run(ctx);
  assert.equal(slots.held("c"), 0, "overdue: no slot");
  const fresh = stepContext({
    puppet: { requestedAt: new Date().toISOString(), environment: "production", tags: "" },
  });
  fresh.vs.metadata.name = "fresh";
  await p.step.run(fresh);
  assert.equal(slots.held("c"), 1, "a run in flight holds one");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { PUPPET_RUN_REQUESTED_AT, type VirtualServerStatus } from "../../src/api/types.js";
import { setCondition } from "../../src/controller/conditions.js";
import { StepError } from "../../src/errors.js";
import { McoConnectionError, McoRpcError, McoTimeout } from "../../src/mcollective/errors.js";
import { McoIdentityError } from "../../src/mcollective/identity.js";
import {
  PuppetBusyError,
  PuppetDisabledError,
  type LastRunSummary,
} from "../../src/mcollective/puppet.js";
import type { StepOutcome } from "../../src/reconcile/engine/context.js";
import { PendingCalls } from "../../src/reconcile/engine/pending-calls.js";
import { mcoDiscovery, puppetStep } from "../../src/reconcile/steps/puppet-step.js";
import { callbacks, fakeNode, puppetPoll, stepContext } from "../support/step-fakes.js";

const HOST = "web-prod-1.example.test";
const KEY = "n/w";
const iso = (epochSeconds: number) => new Date(epochSeconds * 1000).toISOString();
/** Whole seconds, as nodes report times. */
const nowS = () => Math.floor(Date.now() / 1000);
/** A minute ago: within any run timeout. */
const requestedAt = iso(nowS() - 60);

/** The step's promise, failing the test if the step waits on the node instead of returning. */
async function within<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the step waited for the node")), 1000);
  });
  try {
    return await Promise.race([p, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** One server, a node that answers only when told, and the keys its replies woke. */
function setup(status: VirtualServerStatus, classSpec: Record<string, unknown> = {}) {
  const node = fakeNode(10_000);
  const woken: string[] = [];
  const calls = new PendingCalls({ wake: (k) => woken.push(k) });
  const runs: [number, boolean][] = [];
  const ctx = stepContext(status, classSpec);
  const step = puppetStep(
    node.pool,
    calls,
    async () => undefined,
    (s, f) => runs.push([s, f]),
  );
  return { ctx, node, woken, runs, run: () => within(step.run(ctx)) };
}

const waiting = (o: StepOutcome) =>
  o.done ? { done: true } : { phase: o.phase, reason: o.reason, seconds: o.waitSeconds };

/** A server whose last run, requested 2 h ago, applied cleanly. */
const converged = (): VirtualServerStatus => ({
  puppet: {
    requestedAt: iso(nowS() - 7200),
    finishedFor: iso(nowS() - 7200),
    lastRunAt: iso(nowS() - 7190),
    environment: "production",
    tags: "",
    changed: 0,
    failed: 0,
    total: 3,
  },
});

test("due or not due: a run is asked for only when due", async (t) => {
  const cases: {
    name: string;
    status: VirtualServerStatus;
    classSpec?: Record<string, unknown>;
    change?: (s: ReturnType<typeof setup>) => void;
    due: boolean;
  }[] = [
    { name: "first run", status: {}, due: true },
    { name: "converged, no interval", status: converged(), due: false },
    {
      name: "interval not due",
      status: converged(),
      classSpec: { puppet: { interval: "4h" } },
      due: false,
    },
    {
      name: "interval due",
      status: converged(),
      classSpec: { puppet: { interval: "1h" } },
      due: true,
    },
    {
      name: "spec.puppet changed",
      status: converged(),
      change: (s) => (s.ctx.vs.spec.puppet = { tags: ["web"] }),
      due: true,
    },
    {
      name: "annotation newer than the last request",
      status: converged(),
      change: (s) =>
        (s.ctx.vs.metadata.annotations = { [PUPPET_RUN_REQUESTED_AT]: new Date().toISOString() }),
      due: true,
    },
  ];
  for (const c of cases)
    await t.test(c.name, async () => {
      const s = setup(c.status, c.classSpec);
      c.change?.(s);
      const outcome = await s.run();
      assert.equal(s.node.received.length, 0, "nothing is sent before the intent is in status");
      if (!c.due) {
        assert.deepEqual(outcome, { done: true });
        return;
      }
      assert.deepEqual(waiting(outcome), {
        phase: "Configuring",
        reason: "PuppetRunning",
        seconds: 0,
      });
      assert.ok(s.ctx.status.puppet?.pendingRun, "the intent is written first");
      // The next reconcile finds the intent in status (its write went through) and sends it.
      const sent = await s.run();
      assert.equal(s.node.received.length, 1);
      {
        assert.equal(s.node.received[0]!.action, "runonce");
        // The fallback requeue is after the call's own timeout (10 s): the reply or timeout wakes.
        assert.deepEqual(waiting(sent), {
          phase: "Configuring",
          reason: "PuppetRunning",
          seconds: 15,
        });
      }
    });
});

test("runonce: each reply (or failure) as the next reconcile finds it", async (t) => {
  const initiatedAt = nowS() - 1;
  const cases: {
    name: string;
    answer: (call: { resolve(v: unknown): void; reject(e: unknown): void }) => void;
    expect: { wait?: ReturnType<typeof waiting>; reason?: string; retry?: number };
  }[] = [
    {
      name: "accepted",
      answer: (c) => c.resolve({ identity: HOST, summary: "", initiatedAt }),
      expect: { wait: { phase: "Configuring", reason: "PuppetRunning", seconds: 3 } },
    },
    {
      name: "busy",
      answer: (c) =>
        c.reject(new PuppetBusyError(HOST, "puppet", "runonce", 1, "currently applying")),
      expect: { wait: { phase: "Configuring", reason: "PuppetRunning", seconds: 5 } },
    },
    {
      name: "timeout",
      answer: (c) => c.reject(new McoTimeout("puppet", "runonce", "r1", 10_000, [HOST])),
      expect: { reason: "NodeNotReachable", retry: 1 },
    },
    {
      name: "identity not verified",
      answer: (c) => c.reject(new McoIdentityError(HOST, "is not signed by its identity key")),
      expect: { reason: "NodeIdentityUnverified", retry: 30 },
    },
    {
      name: "disabled",
      answer: (c) => c.reject(new PuppetDisabledError(HOST, "puppet", "runonce", 1, "disabled")),
      expect: { reason: "PuppetDisabled", retry: 30 },
    },
    {
      name: "broker lost",
      answer: (c) => c.reject(new McoConnectionError("lost the broker connection")),
      expect: { reason: "BrokerUnreachable", retry: 1 },
    },
    {
      name: "other agent failure",
      answer: (c) => c.reject(new McoRpcError(HOST, "puppet", "runonce", 5, "oops")),
      expect: { reason: "MCollectiveError", retry: 1 },
    },
  ];
  for (const c of cases)
    await t.test(c.name, async () => {
      const s = setup({});
      await s.run(); // the intent
      await s.run(); // sent
      // Pending: the next reconcile neither waits nor asks twice.
      assert.equal(waiting(await s.run()).seconds, 15);
      assert.equal(s.node.received.length, 1);
      assert.deepEqual(s.node.received[0]!.args[1], {
        environment: "production",
        tags: [],
        noop: false,
      });
      assert.deepEqual(s.woken, []);
      c.answer(s.node.received[0]!);
      await callbacks();
      assert.deepEqual(s.woken, [KEY], "the reply wakes the key");
      if (c.expect.wait) {
        assert.deepEqual(waiting(await s.run()), c.expect.wait);
      } else {
        await assert.rejects(
          s.run(),
          (err: unknown) =>
            err instanceof StepError &&
            err.reason === c.expect.reason &&
            err.options.condition === "PuppetApplied" &&
            err.options.retryAfterSeconds === c.expect.retry,
        );
      }
      if (c.name === "accepted") {
        assert.equal(s.ctx.status.puppet?.requestedAt, iso(initiatedAt));
        assert.equal(s.ctx.status.puppet?.environment, "production");
        assert.equal(s.ctx.status.puppet?.pendingRun, undefined, "the intent is done");
        const applied = s.ctx.status.conditions?.find((x) => x.type === "PuppetApplied");
        assert.equal(applied?.reason, "PuppetRunning");
      } else {
        assert.equal(s.ctx.status.puppet?.requestedAt, undefined);
        assert.ok(s.ctx.status.puppet?.pendingRun, "the intent stays until the node took it");
      }
      assert.equal(s.node.received.length, 1);
    });
});

test("a run records what was asked for, even if spec.puppet changed before the reply", async () => {
  const s = setup({});
  s.ctx.vs.metadata.annotations = { [PUPPET_RUN_REQUESTED_AT]: "2026-01-01T00:00:00Z" };
  await s.run();
  s.ctx.vs.spec.puppet = { tags: ["late"] };
  s.ctx.vs.metadata.annotations = { [PUPPET_RUN_REQUESTED_AT]: "2026-02-01T00:00:00Z" };
  await s.run();
  const initiatedAt = nowS();
  s.node.received[0]!.resolve({ identity: HOST, summary: "", initiatedAt });
  await callbacks();
  await s.run();
  const p = s.ctx.status.puppet!;
  assert.equal(p.tags, "");
  assert.equal(p.requestedFor, "2026-01-01T00:00:00Z");
  assert.equal(p.requestedAt, iso(initiatedAt), "the node's start time");
});

test("a silent node: the failure stays on show while the retry is in flight, backing off", async () => {
  const s = setup({});
  const timeout = () => new McoTimeout("puppet", "runonce", "r", 10_000, [HOST]);
  const retries: (number | undefined)[] = [];
  await s.run(); // the intent
  // The runonce, then the checks whether it reached the node (each timing out, backing off).
  for (let i = 0; i < 4; i++) {
    await s.run();
    s.node.received.at(-1)!.reject(timeout());
    await callbacks();
    const err = await s.run().catch((e: StepError) => e);
    assert.ok(err instanceof StepError && err.reason === "NodeNotReachable");
    retries.push(err.options.retryAfterSeconds);
    // What the reconciler writes for it.
    s.ctx.status.phase = "Waiting";
    s.ctx.status.conditions = setCondition([], "Ready", "False", err.reason, err.message, 1);
  }
  assert.deepEqual(
    s.node.received.map((r) => r.action),
    ["runonce", "status", "status", "status"],
    "after a runonce without an answer the node is asked, not sent it again",
  );
  assert.deepEqual(retries, [1, 1, 2, 4]);
  // The retry in flight keeps the failure (no status flap); its reply clears it.
  assert.deepEqual(waiting(await s.run()), {
    phase: "Waiting",
    reason: "NodeNotReachable",
    seconds: 15,
  });
  // The node never ran it: the runonce goes out again.
  s.node.received.at(-1)!.resolve({ applying: false, lastrun: 0, sinceLastrun: null });
  await callbacks();
  await s.run();
  assert.equal(s.node.received.at(-1)!.action, "runonce");
  s.node.received.at(-1)!.resolve({ identity: HOST, summary: "", initiatedAt: nowS() });
  await callbacks();
  assert.equal(waiting(await s.run()).reason, "PuppetRunning");
});

test("last_run_summary: each reply as the next reconcile finds it", async (t) => {
  const since = (s: number) => Date.parse(requestedAt) / 1000 + s;
  const cases: {
    name: string;
    requestedAt?: string;
    summary?: Partial<LastRunSummary>;
    error?: Error;
    expect: { done?: true; wait?: number; reason?: string; runs?: [number, boolean][] };
  }[] = [
    {
      name: "finished, clean",
      summary: { lastrun: since(5), failedResources: 0 },
      expect: { done: true, runs: [[5, false]] },
    },
    {
      name: "finished, failed",
      summary: { lastrun: since(5), failedResources: 2 },
      expect: { reason: "PuppetRunFailed", runs: [[5, true]] },
    },
    {
      name: "finished, no failure count",
      summary: { lastrun: since(5), failedResources: -1 },
      expect: { reason: "PuppetReportIncomplete", runs: [[5, true]] },
    },
    { name: "not yet", summary: { lastrun: since(-100) }, expect: { wait: 3, runs: [] } },
    {
      name: "not yet, past the run timeout",
      requestedAt: iso(nowS() - 31 * 60),
      summary: { lastrun: nowS() - 3600 },
      expect: { reason: "PuppetRunTimedOut", runs: [] },
    },
    {
      name: "timeout",
      error: new McoTimeout("puppet", "last_run_summary", "r", 10_000, [HOST]),
      expect: { reason: "NodeNotReachable", runs: [] },
    },
  ];
  for (const c of cases)
    await t.test(c.name, async () => {
      const at = c.requestedAt ?? requestedAt;
      const s = setup({ puppet: { requestedAt: at, environment: "production", tags: "" } });
      assert.deepEqual(waiting(await s.run()), {
        phase: "Configuring",
        reason: "PuppetRunning",
        seconds: 15,
      });
      await s.run();
      assert.deepEqual(
        s.node.received.map((r) => r.action),
        ["lastRunSummary"],
      );
      const call = s.node.received[0]!;
      if (c.error) call.reject(c.error);
      else
        call.resolve({
          totalResources: 3,
          changedResources: 1,
          failedResourceNames: [],
          reportTime: null,
          ...c.summary,
        });
      await callbacks();
      assert.deepEqual(s.woken, [KEY]);
      const result = await s.run().then(
        (o) => ({ o }),
        (e: unknown) => ({ e }),
      );
      if (c.expect.reason) {
        assert.ok("e" in result && result.e instanceof StepError, JSON.stringify(result));
        assert.equal(result.e.reason, c.expect.reason);
      } else if (c.expect.done) {
        assert.deepEqual("o" in result && result.o, { done: true });
        assert.equal(s.ctx.status.puppet?.finishedFor, at);
      } else {
        assert.equal("o" in result && waiting(result.o).seconds, c.expect.wait);
        // The next reconcile asks again.
        await s.run();
        assert.equal(s.node.received.length, 2);
      }
      assert.deepEqual(s.runs, c.expect.runs);
    });
});

/** One reconcile of a server whose run was requested, against a node answering `summary`. */
async function pollWith(summary: Partial<LastRunSummary>) {
  const { ctx, pool, calls } = puppetPoll(requestedAt, {
    lastrun: Date.parse(requestedAt) / 1000 + 5,
    ...summary,
  });
  const step = puppetStep(pool, calls, async () => undefined);
  return {
    ctx,
    run: async () => {
      await step.run(ctx); // asks
      await callbacks();
      return step.run(ctx); // takes the reply
    },
  };
}

test("a run summary without failed_resources is not a success", async () => {
  const { ctx, run } = await pollWith({ failedResources: -1 });
  await assert.rejects(
    run(),
    (err: unknown) => err instanceof StepError && err.reason === "PuppetReportIncomplete",
  );
  assert.notEqual(ctx.status.conditions?.find((c) => c.type === "PuppetApplied")?.status, "True");
});

test("failed resources are PuppetRunFailed; none is Applied", async () => {
  const failing = await pollWith({ failedResources: 2 });
  await assert.rejects(
    failing.run(),
    (err: unknown) => err instanceof StepError && err.reason === "PuppetRunFailed",
  );
  const ok = await pollWith({ failedResources: 0 });
  assert.deepEqual(await ok.run(), { done: true });
  assert.equal(ok.ctx.status.conditions?.find((c) => c.type === "PuppetApplied")?.status, "True");
});

test("a run requested in the second the previous one finished is waited for, not taken for done", async () => {
  // The previous run finished in the very second the new one was requested (initiated).
  const { ctx, run } = await pollWith({
    failedResources: 0,
    lastrun: Date.parse(requestedAt) / 1000,
  });
  ctx.status.puppet = {
    ...ctx.status.puppet,
    lastRunAt: requestedAt,
    finishedFor: "2026-11-26T09:00:00.000Z",
    changed: 1,
    failed: 0,
    total: 3,
  };
  const outcome = await run();
  assert.equal(outcome.done, false, "the summary still shows the previous run");
  assert.equal(ctx.status.puppet?.finishedFor, "2026-11-26T09:00:00.000Z");
});

test("install discovery returns at once: false until a verified reply came", async () => {
  const node = fakeNode();
  const woken: string[] = [];
  const calls = new PendingCalls({ wake: (k) => woken.push(k) });
  const ctx = stepContext({});
  const known: { identityKey?: string } = {};
  const discover = mcoDiscovery(node.pool, calls, async () => known.identityKey);

  assert.equal(await within(discover(ctx)), false, "no identity key: no check");
  assert.equal(node.received.length, 0);

  known.identityKey = "PEM";
  assert.equal(await within(discover(ctx)), false);
  assert.equal(await within(discover(ctx)), false);
  assert.equal(node.received.length, 1, "one check in flight at a time");
  assert.deepEqual(node.received[0]!.args, [HOST, "PEM"]);

  // A reply not signed by the server's key is no answer; the next check asks again.
  node.received[0]!.reject(new McoIdentityError(HOST, "is not signed by its identity key"));
  await callbacks();
  assert.deepEqual(woken, [KEY]);
  assert.equal(await within(discover(ctx)), false);
  assert.equal(await within(discover(ctx)), false);
  assert.equal(node.received.length, 2);

  node.received[1]!.resolve({ identity: HOST });
  await callbacks();
  assert.equal(await within(discover(ctx)), true);
});

test("a finished run still sending its report keeps its slot until its process is gone", async () => {
  const sending = await pollWith({ failedResources: 0, lastrun: nowS() - 1, applying: true });
  const outcome = await sending.run();
  assert.deepEqual(waiting(outcome), {
    phase: "Configuring",
    reason: "PuppetRunning",
    seconds: 1,
  });
  assert.equal(sending.ctx.status.puppet?.finishedFor, undefined);
  const gone = await pollWith({ failedResources: 0, lastrun: nowS() - 1, applying: false });
  assert.deepEqual(await gone.run(), { done: true });
});

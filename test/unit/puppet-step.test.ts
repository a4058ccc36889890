import { test } from "node:test";
import assert from "node:assert/strict";
import { StepError } from "../../src/errors.js";
import type { LastRunSummary } from "../../src/mcollective/puppet.js";
import { puppetStep } from "../../src/reconcile/puppet-step.js";
import { puppetPoll } from "../support/step-fakes.js";

/** A minute ago, in whole seconds as nodes report times: within any run timeout. */
const requestedAt = new Date(Math.floor(Date.now() / 1000 - 60) * 1000).toISOString();

/** One reconcile of a server whose run was requested, against a node answering `summary`. */
async function pollWith(summary: Partial<LastRunSummary>) {
  const { ctx, pool } = puppetPoll(requestedAt, {
    lastrun: Date.parse(requestedAt) / 1000 + 5,
    ...summary,
  });
  return { ctx, run: () => puppetStep(pool, async () => undefined).run(ctx) };
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

import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { VirtualServer, VirtualServerClass } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import type { LastRunSummary } from "../../src/mcollective/puppet.js";
import type { ReconcileContext } from "../../src/reconcile/context.js";
import type { McoPool } from "../../src/reconcile/mco-pool.js";
import { puppetStep } from "../../src/reconcile/puppet-step.js";

const requestedAt = "2026-11-26T10:00:00.000Z";

/** One reconcile of a server whose run was requested, against a node answering `summary`. */
async function pollWith(summary: Partial<LastRunSummary>) {
  const node = {
    lastRunSummary: async (): Promise<LastRunSummary> =>
      ({
        lastrun: Date.parse(requestedAt) / 1000 + 5,
        totalResources: 3,
        changedResources: 1,
        ...summary,
      }) as LastRunSummary,
  };
  const pool = { get: async () => ({ puppet: node }) } as unknown as McoPool;
  const ctx = {
    vs: {
      metadata: { name: "w", namespace: "n", uid: "u" },
      spec: { hostname: "web-prod-1.example.test", className: "c" },
    } as VirtualServer,
    cls: { metadata: { name: "c" }, spec: {} } as unknown as VirtualServerClass,
    status: { puppet: { requestedAt, environment: "production", tags: "" } },
    log: pino({ level: "silent" }),
  } as ReconcileContext;
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

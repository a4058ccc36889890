import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { VirtualServer, VirtualServerClass } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import { namingStep } from "../../src/reconcile/naming-step.js";
import type { ReconcileContext } from "../../src/reconcile/context.js";

const DNS: Record<string, string> = {
  "web-prod-1.example.test": "10.12.30.20",
  "web-prod-2.example.test": "10.12.30.20", // the same address, by mistake
  "web-prod-3.example.test": "10.12.30.23",
  "dns-30.example.test": "10.12.30.4",
  "ntp-30.example.test": "10.12.30.3",
  "proxy-30.example.test": "10.12.30.2",
};
const cls = { metadata: { name: "c" }, spec: {} } as unknown as VirtualServerClass;

function server(name: string, uid: string, created: string, status = {}): VirtualServer {
  return {
    metadata: { name, namespace: "ns", uid, creationTimestamp: created },
    spec: { hostname: `${name}.example.test`, className: "c" },
    status,
  } as unknown as VirtualServer;
}

async function run(vs: VirtualServer, all: VirtualServer[]): Promise<ReconcileContext> {
  const step = namingStep({
    lookup: () => async (name) => (DNS[name] ? [DNS[name]] : "notfound"),
    allServers: () => all,
  });
  const ctx = { vs, cls, status: {}, log: pino({ level: "silent" }) } as ReconcileContext;
  await step.run(ctx);
  return ctx;
}

test("a second hostname with an address already in use is AddressConflict; the holder keeps it", async () => {
  const resolved = {
    address: "10.12.30.20",
    conditions: [{ type: "NameResolved", status: "True" }],
  };
  const first = server("web-prod-1", "b", "2026-01-02T00:00:00Z", resolved);
  const second = server("web-prod-2", "a", "2026-01-01T00:00:00Z"); // older, but did not hold it
  await assert.rejects(run(second, [first, second]), (err: unknown) => {
    assert.ok(err instanceof StepError);
    assert.equal(err.reason, "AddressConflict");
    assert.match(err.message, /10\.12\.30\.20.*ns\/web-prod-1 \(web-prod-1\.example\.test\)/);
    return true;
  });
  const ctx = await run(first, [first, second]);
  assert.equal(ctx.status.address, "10.12.30.20", "the holder is unaffected");
});

test("different addresses, or a holder being deleted, are no conflict", async () => {
  const first = server("web-prod-1", "b", "2026-01-02T00:00:00Z", { address: "10.12.30.20" });
  const third = server("web-prod-3", "c", "2026-01-03T00:00:00Z");
  assert.equal((await run(third, [first, third])).status.address, "10.12.30.23");
  const leaving = { ...first, metadata: { ...first.metadata, deletionTimestamp: "now" } };
  const second = server("web-prod-2", "a", "2026-01-03T00:00:00Z");
  assert.equal((await run(second, [leaving, second])).status.address, "10.12.30.20");
});

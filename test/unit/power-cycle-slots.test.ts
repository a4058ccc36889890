// Class edits and rolling power cycles: which size an existing VM should have, and how many of a
// class's servers the vm step powers off at once (against the in-memory vCenter).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServer, VirtualServerStatus } from "../../src/api/types.js";
import { targetSize } from "../../src/api/defaults.js";
import type { ReconcileContext, StepOutcome } from "../../src/reconcile/engine/context.js";
import { PowerCycleSlots } from "../../src/reconcile/steps/power-cycle-slots.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const server = (spec: Partial<VirtualServer["spec"]> = {}) =>
  ({ spec: { hostname: "web-prod-1.example.test", className: "c", ...spec } }) as VirtualServer;
const VM = { cpus: 2, memoryMiB: 2048 };

// server spec, class hardware → the size the existing 2 CPU / 2048 MiB VM should have
const SIZES: [string, Partial<VirtualServer["spec"]>, Record<string, unknown>, typeof VM][] = [
  ["class edited, OnCreate (default): VM keeps its size", {}, { cpus: 8, memoryMiB: 8192 }, VM],
  [
    "class edited, Rolling: the class's size",
    {},
    { cpus: 8, memoryMiB: 8192, updatePolicy: "Rolling" },
    { cpus: 8, memoryMiB: 8192 },
  ],
  [
    "the server's own size applies either way",
    { cpus: 4 },
    { cpus: 8, memoryMiB: 8192 },
    { cpus: 4, memoryMiB: 2048 },
  ],
  [
    "the server's own size outranks a Rolling class",
    { memoryMiB: 1024 },
    { cpus: 8, updatePolicy: "Rolling" },
    { cpus: 8, memoryMiB: 1024 },
  ],
];
for (const [what, spec, hardware, want] of SIZES)
  test(`targetSize: ${what}`, () => {
    assert.deepEqual(targetSize(server(spec), { hardware } as never, VM), want);
  });

test("slots: at most `limit` holders per class; a holder keeps its slot; other classes apart", () => {
  let now = 0;
  const cached: VirtualServer[] = [];
  const ofClass = (cls: string) => cached.filter((vs) => vs.spec.className === cls);
  const slots = new PowerCycleSlots(ofClass, () => now);
  assert.equal(slots.acquire("c", "n/a", 1).granted, true);
  assert.equal(slots.acquire("c", "n/a", 1).granted, true, "asked again: still its slot");
  const refused = slots.acquire("c", "n/b", 1);
  assert.deepEqual(refused, { granted: false, holders: ["n/a"] });
  assert.equal(slots.acquire("other", "n/x", 1).granted, true, "another class has its own");
  assert.equal(slots.acquire("c", "n/b", 2).granted, true, "maxUnavailable 2");
  slots.release("n/a");
  slots.release("n/b");
  assert.equal(slots.acquire("c", "n/b", 1).granted, true, "released: free again");
  // A restarted operator knows only the cache: status.vm.powerCycle holds the slot.
  const restarted = new PowerCycleSlots(ofClass, () => now);
  cached.push({
    metadata: { namespace: "n", name: "b" },
    spec: { className: "c" },
    status: { vm: { powerCycle: true } },
  } as VirtualServer);
  assert.deepEqual(restarted.acquire("c", "n/c", 1), { granted: false, holders: ["n/b"] });
  assert.equal(restarted.acquire("other", "n/y", 1).granted, true, "another class's holder");
  // A grant whose status write never landed expires.
  now += 31_000;
  cached.pop();
  assert.equal(slots.acquire("c", "n/c", 1).granted, true);
});

test("vm step: a Rolling class edit power-cycles its servers one at a time (maxUnavailable 1)", async () => {
  const vc = new FakeVSphere();
  const names = ["a", "b", "c"];
  const statuses = new Map<string, VirtualServerStatus>();
  const cached = () =>
    names.map(
      (n) =>
        ({
          metadata: { namespace: "n", name: n },
          spec: { className: "c" },
          status: statuses.get(n),
        }) as VirtualServer,
    );
  const step = vmStep({ get: async () => vc }, new PowerCycleSlots(cached));
  for (const n of names) {
    // Running, no memory hot-add: less memory needs a power cycle.
    vc.addVM({ name: `${n}-prod-1`, ownerUID: n, owner: `n/${n}`, powerState: "poweredOn" });
    statuses.set(n, { install: { startedAt: "2026-01-01T00:00:00Z" } });
  }
  const cls = {
    placement: { datacenter: "DC0", datastore: "ds" },
    boot: { method: "network" },
    hardware: { memoryMiB: 1024, powerCyclePolicy: "IfNeeded", updatePolicy: "Rolling" },
  };
  const reconcile = async (n: string): Promise<StepOutcome> => {
    const ctx = stepContext(structuredClone(statuses.get(n)!), cls);
    ctx.vs.metadata = { namespace: "n", name: n, uid: n };
    ctx.vs.spec.hostname = `${n}-prod-1.example.test`;
    ctx.resolved = { portGroup: "VLAN-30" } as ReconcileContext["resolved"];
    const out = await step.run(ctx);
    statuses.set(n, ctx.status);
    return out;
  };
  let mostOff = 0;
  for (let round = 0; round < 12; round++) {
    const outs = [];
    for (const n of names) outs.push(await reconcile(n));
    const off = [...vc.vms.values()].filter((v) => v.powerState === "poweredOff").length;
    mostOff = Math.max(mostOff, off);
    if (round === 0)
      assert.deepEqual(
        outs.map((o) => (o.done ? "done" : o.reason)),
        ["Resizing", "PowerCycleQueued", "PowerCycleQueued"],
      );
    if (outs.every((o) => o.done)) break;
    vc.endAll();
    mostOff = Math.max(
      mostOff,
      [...vc.vms.values()].filter((v) => v.powerState === "poweredOff").length,
    );
  }
  assert.equal(mostOff, 1, "never more than one VM off at once");
  for (const v of vc.vms.values()) {
    assert.equal(v.memoryMiB, 1024, `${v.name} resized`);
    assert.equal(v.powerState, "poweredOn", `${v.name} on again`);
  }
  for (const n of names) assert.equal(statuses.get(n)!.vm?.powerCycle, undefined);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { VirtualServer, VirtualServerClass } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import { DNSUnavailable, type Lookup } from "../../src/naming/lookup.js";
import {
  claimsBefore,
  namingStep,
  RECHECK_SECONDS,
} from "../../src/reconcile/steps/naming-step.js";
import type { ReconcileContext } from "../../src/reconcile/engine/context.js";
import { ServerIndex } from "../../src/reconcile/engine/server-index.js";

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
    servers: ServerIndex.of(all),
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

// --- DNS outages: a server that resolved goes on with what status records ----------------------

const RESOLVED_AT = "2026-03-01T10:00:00Z";
const recorded = (conditions: object[], more: object = {}) => ({
  phase: "Ready",
  address: "10.12.30.20",
  vlan: 30,
  portGroup: "VLAN-30",
  services: {
    dns: { name: "dns-30.example.test", address: "10.12.30.4" },
    ntp: { name: "ntp-30.example.test", address: "10.12.30.3" },
    proxy: { name: "proxy-30.example.test", address: "10.12.30.2" },
  },
  conditions,
  ...more,
});
const resolvedTrue = {
  type: "NameResolved",
  status: "True",
  reason: "Resolved",
  message: "10.12.30.20 (VLAN 30, port group VLAN-30)",
  lastTransitionTime: RESOLVED_AT,
};

/** DNS that times out for every name, or only for the names given. */
const outage =
  (names?: string[]) =>
  async (name: string): Promise<string[] | "notfound"> => {
    if (!names || names.includes(name)) throw new DNSUnavailable(name, "ETIMEOUT");
    return DNS[name] ? [DNS[name]] : "notfound";
  };

async function runWith(lookup: Lookup, status: object) {
  const vs = server("web-prod-1", "a", "2026-01-01T00:00:00Z", structuredClone(status));
  const step = namingStep({ lookup: () => lookup, servers: ServerIndex.of([vs]) });
  const ctx = {
    vs,
    cls,
    status: structuredClone(status),
    log: pino({ level: "silent" }),
  } as ReconcileContext;
  const outcome = await step.run(ctx).catch((e: unknown) => e);
  return { ctx, outcome };
}

test("a DNS outage: what the naming step does with and without a recorded resolution", async (t) => {
  const standingIn = {
    type: "NameResolved",
    status: "Unknown",
    reason: "DNSUnavailable",
    message:
      "DNS could not answer for web-prod-1.example.test (ETIMEOUT); vsop retries. Until it answers, " +
      `vsop uses the address recorded at ${RESOLVED_AT}: 10.12.30.20 (VLAN 30, port group VLAN-30).`,
    lastTransitionTime: "2026-03-02T00:00:00Z",
  };
  const cases: {
    name: string;
    lookup: Lookup;
    status: object;
    /** a reason thrown, or the NameResolved the step leaves and whether it goes on */
    throws?: string;
    condition?: { status: string; reason: string };
  }[] = [
    {
      name: "resolved before: goes on with the recorded address",
      lookup: outage(),
      status: recorded([resolvedTrue]),
      condition: { status: "Unknown", reason: "DNSUnavailable" },
    },
    {
      name: "only a service name times out: the same",
      lookup: outage(["ntp-30.example.test"]),
      status: recorded([resolvedTrue]),
      condition: { status: "Unknown", reason: "DNSUnavailable" },
    },
    {
      name: "still out on the next reconcile: goes on, the recorded time kept",
      lookup: outage(),
      status: recorded([standingIn], { resolvedAt: RESOLVED_AT }),
      condition: { status: "Unknown", reason: "DNSUnavailable" },
    },
    {
      name: "an outage after the name was reported missing (resolvedAt cleared): waits",
      lookup: outage(),
      status: recorded([{ ...standingIn, message: "DNS could not answer; vsop retries." }]),
      throws: "DNSUnavailable",
    },
    {
      name: "never resolved: waits with DNSUnavailable",
      lookup: outage(),
      status: {},
      throws: "DNSUnavailable",
    },
    {
      name: "the name was reported missing before: waits with DNSUnavailable",
      lookup: outage(),
      status: recorded([
        { type: "NameResolved", status: "False", reason: "NameNotResolvable", message: "gone." },
      ]),
      throws: "DNSUnavailable",
    },
    {
      name: "NXDOMAIN is no outage: NameNotResolvable, as without a recorded address",
      lookup: async () => "notfound",
      status: recorded([resolvedTrue], { resolvedAt: RESOLVED_AT }),
      throws: "NameNotResolvable",
    },
    {
      name: "DNS back: NameResolved True again",
      lookup: outage([]),
      status: recorded([standingIn], { resolvedAt: RESOLVED_AT }),
      condition: { status: "True", reason: "Resolved" },
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const { ctx, outcome } = await runWith(c.lookup, c.status);
      if (c.throws) {
        assert.ok(outcome instanceof StepError, String(outcome));
        assert.equal(outcome.reason, c.throws);
        if (c.throws === "NameNotResolvable")
          assert.equal(ctx.status.resolvedAt, undefined, "the recorded answer no longer stands");
        if (c.throws === "DNSUnavailable") assert.equal(outcome.options.status, "Unknown");
        return;
      }
      assert.deepEqual(outcome, { done: true }, "the later steps run");
      assert.equal(ctx.resolved?.address, "10.12.30.20");
      assert.equal(ctx.resolved?.portGroup, "VLAN-30");
      assert.equal(ctx.resolved?.services.ntp.address, "10.12.30.3");
      assert.equal(ctx.status.address, "10.12.30.20");
      assert.equal(
        ctx.status.resolvedAt,
        RESOLVED_AT,
        "the same answer: the time it was first given",
      );
      const nr = ctx.status.conditions?.find((x) => x.type === "NameResolved");
      assert.equal(nr?.status, c.condition!.status);
      assert.equal(nr?.reason, c.condition!.reason);
      if (nr?.status === "Unknown") {
        assert.match(nr.message, /\(ETIMEOUT\)/);
        assert.ok(
          nr.message.includes(`vsop uses the address recorded at ${RESOLVED_AT}: 10.12.30.20 `),
          nr.message,
        );
        assert.equal(ctx.recheckAfterSeconds, RECHECK_SECONDS, "DNS is asked again soon");
      } else {
        assert.equal(ctx.recheckAfterSeconds, undefined);
      }
    });
  }
});

test("during an outage a server that stands in keeps its hostname against an older rival", async () => {
  const standing = server("web-prod-1", "b", "2026-01-02T00:00:00Z", recorded([resolvedTrue]));
  const first = await runWith(outage(), standing.status!);
  const holder = { ...standing, status: first.ctx.status };
  const rival = server("web-prod-1", "a", "2026-01-01T00:00:00Z"); // older, never resolved
  assert.ok(claimsBefore(holder, rival));
  assert.ok(!claimsBefore(rival, holder));
});

test("extra networks: resolved into ctx and NameResolved; one without a record stops the step", async () => {
  const zone: Record<string, string> = { ...DNS, "web-prod-3-bk.example.test": "10.12.40.23" };
  const vs = server("web-prod-3", "c", "2026-01-03T00:00:00Z");
  vs.spec.extraNetworks = [{ hostname: "web-prod-3-bk.example.test" }];
  const step = namingStep({
    lookup: () => async (name) => (zone[name] ? [zone[name]] : "notfound"),
    servers: ServerIndex.of([vs]),
  });
  const ctx = { vs, cls, status: {}, log: pino({ level: "silent" }) } as ReconcileContext;
  await step.run(ctx);
  assert.deepEqual(ctx.extraNetworks, [
    {
      hostname: "web-prod-3-bk.example.test",
      address: "10.12.40.23",
      vlan: 40,
      portGroup: "VLAN-40",
    },
  ]);
  assert.match(ctx.status.conditions![0]!.message, /extra network web-prod-3-bk.*VLAN-40/);
  vs.spec.extraNetworks = [{ hostname: "web-prod-3-gone.example.test" }];
  const again = { vs, cls, status: {}, log: pino({ level: "silent" }) } as ReconcileContext;
  await assert.rejects(step.run(again), /Extra network hostname web-prod-3-gone/);
});

test("extra networks during a DNS outage: the addresses status.vm.nics recorded, else the outage", async () => {
  const vs = server("web-prod-3", "c", "2026-01-03T00:00:00Z");
  vs.spec.extraNetworks = [{ hostname: "web-prod-3-bk.example.test" }];
  const down: Lookup = async (name) => {
    if (name.includes("-bk.")) throw new DNSUnavailable(name, "ETIMEOUT");
    return DNS[name] ? [DNS[name]] : "notfound";
  };
  const step = namingStep({ lookup: () => down, servers: ServerIndex.of([vs]) });
  const nic = {
    role: "extra" as const,
    portGroup: "VLAN-40",
    connected: true,
    hostname: "web-prod-3-bk.example.test",
    address: "10.12.40.23",
    vlan: 40,
  };
  const ctx = {
    vs,
    cls,
    status: { vm: { nics: [nic] } },
    log: pino({ level: "silent" }),
  } as ReconcileContext;
  await step.run(ctx);
  assert.equal(ctx.extraNetworks?.[0]?.portGroup, "VLAN-40");
  assert.equal(ctx.status.conditions?.[0]?.status, "Unknown");
  assert.equal(ctx.recheckAfterSeconds, RECHECK_SECONDS);
  const none = { vs, cls, status: {}, log: pino({ level: "silent" }) } as ReconcileContext;
  await assert.rejects(step.run(none), (err: unknown) => err instanceof DNSUnavailable);
});

test("status.resolvedAt: set when DNS gives a new answer, not rewritten for the same one", async () => {
  const moved = recorded([resolvedTrue], { resolvedAt: RESOLVED_AT, address: "10.12.30.99" });
  const before = new Date().toISOString();
  const { ctx, outcome } = await runWith(outage([]), moved);
  assert.deepEqual(outcome, { done: true });
  assert.equal(ctx.status.address, "10.12.30.20");
  assert.ok(ctx.status.resolvedAt! >= before, `${ctx.status.resolvedAt} is the new answer's time`);
});

// Phase semantics and install progress at the reconciler's edge: Waiting for what vsop retries on
// its own, Failed for what needs a person (the README's troubleshooting table says the same), and
// one Normal Event when the installer's first sign of life reaches status.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { pino } from "pino";
import type {
  VirtualServer,
  VirtualServerClass,
  VirtualServerStatus,
} from "../../src/api/types.js";
import type { EventRecorder } from "../../src/controller/events.js";
import type { Kube } from "../../src/controller/kube.js";
import { StepError } from "../../src/errors.js";
import { DNSUnavailable } from "../../src/naming/lookup.js";
import { namingStep } from "../../src/reconcile/steps/naming-step.js";
import type { ReconcileContext, Step } from "../../src/reconcile/engine/context.js";
import {
  RETRIED_REASONS,
  RetryLater,
  SUSPENDED_REASONS,
  VirtualServerReconciler,
} from "../../src/reconcile/engine/virtualserver.js";
import { ServerIndex } from "../../src/reconcile/engine/server-index.js";

const root = new URL("../../", import.meta.url).pathname;

const DNS_ZONE: Record<string, string> = {
  "web-prod-1.example.test": "10.12.30.20",
  "dns-30.example.test": "10.12.30.4",
  "ntp-30.example.test": "10.12.30.3",
  "proxy-30.example.test": "10.12.30.2",
};

function harness(steps: Step[], status: VirtualServerStatus = {}) {
  let vs: VirtualServer = {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: {
      name: "web-prod-1",
      namespace: "ns",
      uid: "u1",
      generation: 1,
      resourceVersion: "1",
      finalizers: ["provisioning.vsop.dev/vm"],
    },
    spec: { hostname: "web-prod-1.example.test", className: "c" },
    status,
  };
  const cls = { metadata: { name: "c" }, spec: {} } as unknown as VirtualServerClass;
  const events: { type: string; reason: string; message: string }[] = [];
  let writes = 0;
  const kube = {
    mergePatch: async (_path: string, patch: { metadata: object }) => {
      vs = { ...vs, metadata: { ...vs.metadata, ...patch.metadata } };
      return vs;
    },
    replace: async (_path: string, body: VirtualServer) => {
      writes++;
      vs = { ...vs, status: body.status };
      return vs;
    },
  } as unknown as Kube;
  const recorder = {
    record: async (_o: unknown, type: string, reason: string, message: string) => {
      events.push({ type, reason, message });
    },
  } as unknown as EventRecorder;
  const reconciler = new VirtualServerReconciler({
    kube,
    recorder,
    logger: pino({ level: "silent" }),
    getServer: () => vs,
    getClass: () => cls,
    steps,
  });
  return {
    events,
    writes: () => writes,
    status: () => vs.status!,
    reconcile: () =>
      reconciler.reconcile("ns/web-prod-1").catch((e: unknown) => {
        if (!(e instanceof RetryLater)) throw e;
        return {};
      }),
  };
}

const failing = (reason: string, status?: "False" | "Unknown"): Step => ({
  name: "failing",
  run: async () => {
    throw new StepError(reason, `${reason} happened.`, { condition: "NameResolved", status });
  },
});

test("reasons vsop retries on its own are phase Waiting; those that need a person are Failed", async () => {
  for (const reason of ["NameNotResolvable", "ClassNotFound", "SecretNotFound"]) {
    const h = harness([failing(reason)]);
    await h.reconcile();
    assert.equal(h.status().phase, "Waiting", reason);
  }
  for (const reason of [
    "DNSUnavailable",
    "VCenterUnreachable",
    "BrokerUnreachable",
    "NodeNotReachable",
    "APIServerUnavailable",
  ]) {
    const h = harness([failing(reason, "Unknown")], { phase: "Installing" });
    await h.reconcile();
    assert.equal(h.status().phase, "Waiting", reason);
  }
  for (const reason of [
    "NameConventionViolation",
    "InvalidClass",
    "HostnameConflict",
    "VMNameConflict",
    "TemplateError",
    "PuppetRunFailed",
    "InternalError",
  ]) {
    const h = harness([failing(reason)]);
    await h.reconcile();
    assert.equal(h.status().phase, "Failed", reason);
    assert.equal(h.status().conditions?.find((c) => c.type === "Ready")?.reason, reason);
  }
});

test("a class that does not exist (yet) is Waiting, with no retry: the class's watch wakes it", async () => {
  const vs = {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: { name: "x", namespace: "ns", uid: "u2", generation: 1 },
    spec: { hostname: "web-prod-2.example.test", className: "missing" },
  } as VirtualServer;
  let written: VirtualServerStatus | undefined;
  let current = vs;
  let writes = 0;
  const r = new VirtualServerReconciler({
    kube: {
      replace: async (_p: string, body: VirtualServer) => {
        writes++;
        written = body.status;
        current = { ...body, metadata: { ...body.metadata, resourceVersion: String(writes) } };
        return current;
      },
    } as unknown as Kube,
    recorder: { record: async () => undefined } as unknown as EventRecorder,
    logger: pino({ level: "silent" }),
    getServer: () => current,
    getClass: () => undefined,
    steps: [],
  });
  // Not thrown (the queue's backoff would retry it every few seconds, 10,000 servers at once
  // when a class is deleted) and no requeue: the class informer enqueues its servers.
  assert.deepEqual(await r.reconcile("ns/x"), {});
  assert.equal(written?.phase, "Waiting");
  assert.equal(written?.conditions?.find((c) => c.type === "Ready")?.reason, "ClassNotFound");
  assert.deepEqual(await r.reconcile("ns/x"), {});
  assert.equal(writes, 1, "the second look writes nothing");
});

test("a server powered off as asked: phase PoweredOff, Ready False, a Normal Event", async () => {
  const off: Step = {
    name: "power",
    run: async () => ({
      done: false,
      waitSeconds: 300,
      phase: "PoweredOff",
      reason: "PoweredOff",
      message: "web-prod-1.example.test is powered off, as spec.powerState asks.",
    }),
  };
  const h = harness([off], { phase: "Ready" });
  await h.reconcile();
  assert.equal(h.status().phase, "PoweredOff");
  const ready = h.status().conditions?.find((c) => c.type === "Ready");
  assert.deepEqual([ready?.status, ready?.reason], ["False", "PoweredOff"]);
  assert.deepEqual(
    h.events.map((e) => [e.type, e.reason]),
    [["Normal", "PoweredOff"]],
    "asked for, not a warning",
  );
});

test("README's troubleshooting table: Waiting exactly for RETRIED_REASONS, PoweredOff for SUSPENDED_REASONS", () => {
  const readme = readFileSync(`${root}README.md`, "utf8");
  const start = readme.indexOf("## Troubleshooting by condition reason");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const rows = section
    .split("\n")
    .filter((l) => /^\| `/.test(l))
    .map((l) => l.split(" | "));
  assert.ok(rows.length >= 25, `only ${rows.length} rows`);
  const waiting = new Set<string>();
  const suspended = new Set<string>();
  for (const [reasons, phase] of rows) {
    assert.ok(
      phase === "Waiting" || phase === "Failed" || phase === "PoweredOff",
      `phase column of ${reasons}: ${phase}`,
    );
    for (const m of reasons!.matchAll(/`(\w+)`/g)) {
      if (phase === "Waiting") waiting.add(m[1]!);
      if (phase === "PoweredOff") suspended.add(m[1]!);
    }
  }
  assert.deepEqual([...waiting].sort(), [...RETRIED_REASONS].sort());
  assert.deepEqual([...suspended].sort(), [...SUSPENDED_REASONS].sort());
});

test("the installer's first sign of life: one Normal Event when it reaches status, none after", async () => {
  const record: { fetchedAt?: string } = {};
  const install: Step = {
    name: "install",
    run: async (ctx: ReconcileContext) => {
      ctx.status.install = {
        method: "network",
        startedAt: "2026-05-01T10:00:00.000Z",
        ...(record.fetchedAt ? { kickstartFetchedAt: record.fetchedAt } : {}),
      };
      return {
        done: false,
        waitSeconds: 5,
        phase: "Installing",
        reason: "Installing",
        message: "installing",
      };
    },
  };
  const h = harness([install]);
  await h.reconcile();
  assert.equal(h.events.filter((e) => e.reason === "KickstartFetched").length, 0);
  record.fetchedAt = "2026-05-01T10:01:00.000Z";
  await h.reconcile();
  await h.reconcile();
  const fetched = h.events.filter((e) => e.reason === "KickstartFetched");
  assert.equal(fetched.length, 1);
  assert.equal(fetched[0]!.type, "Normal");
  assert.match(fetched[0]!.message, /fetched its kickstart at 2026-05-01T10:01:00\.000Z/);
  assert.equal(h.status().install?.kickstartFetchedAt, record.fetchedAt);
  assert.equal(
    h.writes(),
    2,
    "one write for the first status, one for the fetch; none when nothing changed",
  );
});

test("iso and guestinfo installs announce their first key fetch as InstallerStarted", async () => {
  const install: Step = {
    name: "install",
    run: async (ctx: ReconcileContext) => {
      ctx.status.install = {
        method: "guestinfo",
        startedAt: "2026-05-01T10:00:00.000Z",
        kickstartFetchedAt: "2026-05-01T10:02:00.000Z",
        keysFetchedAt: "2026-05-01T10:02:00.000Z",
      };
      return {
        done: false,
        waitSeconds: 5,
        phase: "Installing",
        reason: "Installing",
        message: "installing",
      };
    },
  };
  const h = harness([install]);
  await h.reconcile();
  assert.deepEqual(
    h.events.filter((e) => e.type === "Normal" && e.reason !== "Installing").map((e) => e.reason),
    ["InstallerStarted"],
  );
});

test("a DNS outage: a Ready server stays Ready, NameResolved turns Unknown, DNS is asked again in 30 s", async () => {
  let dnsDown = false;
  const naming = namingStep({
    lookup: () => async (name) => {
      if (dnsDown) throw new DNSUnavailable(name, "ETIMEOUT");
      return [DNS_ZONE[name]!];
    },
    servers: ServerIndex.of([]),
  });
  const rest: Step = {
    name: "rest",
    run: async (ctx) => {
      assert.equal(ctx.resolved?.portGroup, "VLAN-30", "the later steps get the resolution");
      return { done: true };
    },
  };
  const h = harness([naming, rest]);
  assert.deepEqual(await h.reconcile(), {});
  assert.equal(h.status().phase, "Ready");

  dnsDown = true;
  assert.deepEqual(await h.reconcile(), { requeueAfterSeconds: 30 });
  const s = h.status();
  assert.equal(s.phase, "Ready");
  assert.equal(s.conditions?.find((c) => c.type === "Ready")?.status, "True");
  const nr = s.conditions?.find((c) => c.type === "NameResolved");
  assert.deepEqual([nr?.status, nr?.reason], ["Unknown", "DNSUnavailable"]);
  assert.equal(s.address, "10.12.30.20");
  assert.deepEqual(
    h.events.filter((e) => e.type === "Warning").map((e) => e.reason),
    ["DNSUnavailable"],
  );
  const writes = h.writes();
  await h.reconcile();
  assert.equal(h.writes(), writes, "the same outage writes nothing more");

  dnsDown = false;
  assert.deepEqual(await h.reconcile(), {});
  assert.equal(h.status().conditions?.find((c) => c.type === "NameResolved")?.status, "True");
});

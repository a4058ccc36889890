// Power state on the stack's vcsim, every outcome checked with govc (power state, and vCenter's
// events: "is stopping" for a hard power-off or reset, "Guest OS shut down" for a guest shutdown,
// "is starting" for a power-on). vcsim's VMs run no VMware Tools unless told
// (SET.guest.toolsRunningStatus); its ShutdownGuest powers off at once, its RebootGuest changes
// nothing visible, so a reboot is counted by vsop's SOAP request metric.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNS,
  apply,
  auditEvents,
  cond,
  createNamespace,
  deleteServers,
  events,
  getVS,
  installVsop,
  kubectl,
  metric,
  nodeDown,
  nodeUp,
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  WRITE_VERBS,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs, govc, destroyVMs } from "../support/govc.js";

const CLASS = "power-assumed";
const HOST = "pwr-prod-1.example.test";
const VM = "pwr-prod-1";
const LABELS = { "vsop-test": "power" };
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  destroyVMs([VM]); // a leftover of an interrupted run
  ns = createNamespace("power");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.147", HOST);
  nodeUp(HOST);
  op = startOperator("power", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=power",
    "--resync-period",
    "1s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
  removeDNS(HOST);
});

/** Patches the spec; fields the API server dropped mean a CRD without them (another run's). */
function patch(spec: Record<string, unknown>): void {
  kubectl(["-n", ns, "patch", "vsrv", "pwr", "--type=merge", "-p", JSON.stringify({ spec })]);
  const stored = getVS(ns, "pwr")!.spec;
  for (const [k, v] of Object.entries(spec))
    assert.equal(
      stored[k],
      v,
      `spec.${k} was pruned: the cluster's CRD lacks it (re-applied by another run?)`,
    );
}

/** Ready with this status and reason, for the current generation. */
function waitReady(status: string, reason: string, timeoutMs = 60_000): Promise<VS> {
  return waitFor(
    `pwr Ready=${status} (${reason}) for the current generation`,
    () => {
      const vs = getVS(ns, "pwr");
      const ready = cond(vs, "Ready");
      return vs?.status?.observedGeneration === vs?.metadata.generation &&
        ready?.status === status &&
        ready.reason === reason
        ? vs
        : undefined;
    },
    timeoutMs,
  );
}

const vmPower = () => findVMs(VM)[0]!.runtime.powerState;

/** How often vCenter's events for the VM say each thing. */
function vmEvents() {
  const path = govc(["find", "/", "-type", "m", "-name", VM]).trim();
  const lines = govc(["events", "-n", "1000", path]).split("\n");
  const count = (s: string) => lines.filter((l) => l.includes(s)).length;
  return {
    stopping: count("is stopping"),
    starting: count("is starting"),
    guestShutdown: count("Guest OS shut down"),
  };
}

const soap = async (method: string) =>
  metric((await scrape(op.metricsPort)).body, "vsop_vsphere_soap_requests_total", { method });

const powerStatus = (vs: VS) => (vs.status?.power ?? {}) as Record<string, string | undefined>;

test("Off without VMware Tools (TrySoft): powered off hard, PoweredOff; On again: Ready", async () => {
  apply(virtualServer(ns, "pwr", HOST, CLASS, LABELS));
  await waitReady("True", "Provisioned", 120_000);
  assert.equal(vmPower(), "poweredOn");
  const before = vmEvents();

  patch({ powerState: "Off" });
  const off = await waitReady("False", "PoweredOff");
  assert.equal(off.status?.phase, "PoweredOff");
  assert.match(cond(off, "Ready")!.message, /powered off, as spec\.powerState asks/);
  assert.equal(vmPower(), "poweredOff", "govc: the VM is off");
  assert.equal((off.status?.vm as { powerState?: string }).powerState, "poweredOff");
  assert.equal(powerStatus(off).shutdownRequestedAt, undefined);
  const after = vmEvents();
  assert.equal(after.stopping, before.stopping + 1, "one hard power-off");
  assert.equal(after.guestShutdown, before.guestShutdown, "no guest shutdown without Tools");
  assert.equal(await soap("ShutdownGuest"), 0, "not asked: vCenter would refuse");
  assert.match(op.logs(), /VMware Tools do not run in its guest/);
  const offEvents = events(ns, "pwr").filter((e) => e.reason === "PoweredOff");
  assert.deepEqual(
    offEvents.map((e) => e.type),
    ["Normal"],
    "asked for: a Normal Event, not a Warning",
  );

  // Converged while off (resyncs every second): it stays off, nothing is started or written.
  await sleep(1500); // let the last watch events settle
  const since = new Date();
  await sleep(4000);
  assert.equal(vmPower(), "poweredOff");
  assert.deepEqual(vmEvents(), after);
  const writes = auditEvents(since).filter(
    (e) => WRITE_VERBS.has(e.verb) && e.objectRef?.namespace === ns,
  );
  assert.deepEqual(
    writes.map((e) => `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.subresource ?? ""}`),
    [],
  );

  patch({ powerState: "On" });
  const on = await waitReady("True", "Provisioned");
  assert.equal(on.status?.phase, "Ready");
  assert.equal(vmPower(), "poweredOn", "govc: the VM is on again");
  assert.equal(vmEvents().starting, after.starting + 1, "one power-on");
});

test("a restart request resets the VM once per value (no Tools)", async () => {
  const at = "2026-05-01T10:00:00Z";
  const before = vmEvents();
  patch({ restartRequestedAt: at });
  const restarted = await waitFor("restart honoured, Ready again", () => {
    const vs = getVS(ns, "pwr");
    return vs &&
      powerStatus(vs).restartedFor === at &&
      vs.status?.observedGeneration === vs.metadata.generation &&
      cond(vs, "Ready")?.status === "True"
      ? vs
      : undefined;
  });
  assert.ok(powerStatus(restarted).restartedAt, "restartedAt recorded");
  assert.equal(await soap("ResetVM_Task"), 1);
  const once = vmEvents();
  assert.deepEqual(
    [once.stopping - before.stopping, once.starting - before.starting],
    [1, 1],
    "one reset: stopped and started once",
  );
  assert.equal(vmPower(), "poweredOn");

  // Resyncs every second: the same value restarts nothing more.
  await sleep(5000);
  assert.deepEqual(vmEvents(), once);
  assert.equal(await soap("ResetVM_Task"), 1);

  // A new value: once more.
  patch({ restartRequestedAt: "2026-05-01T11:00:00Z" });
  await waitFor("second restart honoured", () => {
    const vs = getVS(ns, "pwr");
    return vs && powerStatus(vs).restartedFor === "2026-05-01T11:00:00Z";
  });
  await waitFor("two resets", async () => (await soap("ResetVM_Task")) === 2);
  await waitReady("True", "Provisioned");
});

test("Soft: without Tools GuestToolsNotRunning and the VM stays on; once Tools run, a guest shutdown", async () => {
  const before = vmEvents();
  patch({ powerState: "Off", powerOffMode: "Soft" });
  const refused = await waitReady("False", "GuestToolsNotRunning");
  assert.equal(refused.status?.phase, "Failed");
  assert.match(cond(refused, "Ready")!.message, /VMware Tools do not run/);
  assert.equal(vmPower(), "poweredOn", "Soft never powers off hard");

  // Tools start in the guest: the VM's change wakes vsop (no resync needed for it, but allowed).
  govc(["vm.change", "-vm", VM, "-e", "SET.guest.toolsRunningStatus=guestToolsRunning"]);
  const off = await waitReady("False", "PoweredOff");
  assert.equal(off.status?.phase, "PoweredOff");
  assert.equal(vmPower(), "poweredOff");
  assert.equal(await soap("ShutdownGuest"), 1, "asked the guest once");
  const after = vmEvents();
  assert.equal(after.guestShutdown, before.guestShutdown + 1, "govc: Guest OS shut down");
  assert.equal(after.stopping, before.stopping, "no hard power-off");
  assert.equal(powerStatus(off).shutdownRequestedAt, undefined, "cleared once off");

  patch({ powerState: "On" });
  await waitReady("True", "Provisioned");
  assert.equal(vmPower(), "poweredOn");
});

test("a restart with Tools running is the guest's own reboot (RebootGuest), once", async () => {
  // vcsim keeps guest.toolsRunningStatus across power cycles of a VM without a container.
  const before = vmEvents();
  patch({ restartRequestedAt: "2026-05-02T10:00:00Z" });
  await waitFor("restart honoured", () => {
    const vs = getVS(ns, "pwr");
    return vs && powerStatus(vs).restartedFor === "2026-05-02T10:00:00Z";
  });
  await waitReady("True", "Provisioned");
  await sleep(3000);
  assert.equal(await soap("RebootGuest"), 1);
  assert.equal(await soap("ResetVM_Task"), 2, "no reset this time");
  assert.deepEqual(vmEvents(), before, "the VM itself was neither stopped nor started");
});

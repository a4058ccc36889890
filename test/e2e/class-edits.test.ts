// Editing a class on the stack's vcsim: existing VMs keep their size unless the class rolls its
// edits out (hardware.updatePolicy Rolling), and then power cycles go one server at a time
// (maxUnavailable 1), checked on vCenter's own event timeline ("is stopping" .. "is starting").
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  getVS,
  installVsop,
  metric,
  removeDNSNames,
  scrape,
  startOperator,
  waitFor,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs, govc, destroyVMs } from "../support/govc.js";

const CLASS = "class-edits";
const NAMES = ["rollc-prod-1", "rollc-prod-2", "rollc-prod-3"];
const RECORDS: [string, string][] = NAMES.map((n, i) => [
  `10.12.30.${161 + i}`,
  `${n}.example.test`,
]);
const LABELS = { "vsop-test": "class-edits" };
let ns: string;
let op: Operator;

const classWith = (hardware: Record<string, unknown>) =>
  applyClass(CLASS, {
    boot: { method: "guestinfo", assumeInstalled: true },
    hardware: { memoryMiB: 2048, ...hardware },
  });

before(() => {
  installVsop();
  destroyVMs(NAMES); // leftovers of an interrupted run
  ns = createNamespace("class-edits");
  classWith({});
  addDNSRecords(RECORDS);
  op = startOperator("class-edits", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=class-edits",
    "--resync-period",
    "1s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  removeDNSNames(NAMES.map((n) => `${n}.example.test`));
});

const memory = () => NAMES.map((n) => findVMs(n)[0]?.config.hardware.memoryMB);

const reconfigures = async () =>
  metric((await scrape(op.metricsPort)).body, "vsop_vsphere_soap_requests_total", {
    method: "ReconfigVM_Task",
  });

interface VCEvent {
  createdTime: string;
  message: string;
}

/** When each VM was off after `since`: from vCenter's "is stopping" to its next "is starting". */
function offIntervals(since: Date): { vm: string; from: number; to: number }[] {
  const out: { vm: string; from: number; to: number }[] = [];
  for (const name of NAMES) {
    const path = govc(["find", "/", "-type", "m", "-name", name]).trim();
    // govc prints one indented JSON object per event.
    const text = govc(["events", "-json", "-n", "200", path]).trim();
    const evs = (JSON.parse(`[${text.replace(/}\s*\n{/g, "},{")}]`) as VCEvent[])
      .filter((e) => new Date(e.createdTime) >= since)
      .sort((a, b) => a.createdTime.localeCompare(b.createdTime));
    let from: number | undefined;
    for (const e of evs) {
      const t = new Date(e.createdTime).getTime();
      if (e.message.includes("is stopping")) from = t;
      if (e.message.includes("is starting") && from !== undefined) {
        out.push({ vm: name, from, to: t });
        from = undefined;
      }
    }
    if (from !== undefined) out.push({ vm: name, from, to: Infinity });
  }
  return out;
}

test("a class edit leaves existing VMs alone (OnCreate); Rolling resizes them one at a time", async () => {
  apply(...NAMES.map((n, i) => virtualServer(ns, `s${i + 1}`, `${n}.example.test`, CLASS, LABELS)));
  for (let i = 1; i <= NAMES.length; i++)
    await waitFor(
      `s${i} VMCreated`,
      () => cond(getVS(ns, `s${i}`), "VMCreated")?.status === "True",
      120_000,
    );
  assert.deepEqual(memory(), [2048, 2048, 2048]);

  // OnCreate (the default): less memory in the class, power cycles allowed, and yet nothing moves.
  const before = await reconfigures();
  classWith({ memoryMiB: 1024, powerCyclePolicy: "IfNeeded" });
  await sleep(6000); // six resyncs of every server
  assert.deepEqual(memory(), [2048, 2048, 2048], "existing VMs keep their size");
  assert.equal(await reconfigures(), before, "no ReconfigVM_Task sent");
  assert.ok(
    NAMES.every((n) => findVMs(n)[0]!.runtime.powerState === "poweredOn"),
    "nothing powered off",
  );

  // Rolling: the class's size reaches every VM, each through a power cycle (no memory shrink hot).
  const since = new Date(Date.now() - 1000);
  classWith({ memoryMiB: 1024, powerCyclePolicy: "IfNeeded", updatePolicy: "Rolling" });
  await waitFor("every VM at 1024 MiB and on", () => {
    const vms = NAMES.map((n) => findVMs(n)[0]!);
    return vms.every(
      (v) => v.config.hardware.memoryMB === 1024 && v.runtime.powerState === "poweredOn",
    );
  });
  const off = offIntervals(since);
  assert.deepEqual(off.map((o) => o.vm).sort(), [...NAMES].sort(), "each VM power-cycled once");
  for (const a of off)
    for (const b of off)
      if (a !== b)
        assert.ok(
          a.to <= b.from || b.to <= a.from,
          `${a.vm} and ${b.vm} were off at the same time: ${JSON.stringify(off)}`,
        );
  const queued = NAMES.flatMap((_, i) =>
    events(ns, `s${i + 1}`).filter((e) => e.reason === "PowerCycleQueued"),
  );
  assert.ok(queued.length >= 1, "servers waiting their turn say so");
  await waitFor("no power cycle left in status", () =>
    NAMES.every(
      (_, i) =>
        !(getVS(ns, `s${i + 1}`)?.status?.vm as { powerCycle?: boolean } | undefined)?.powerCycle,
    ),
  );
});

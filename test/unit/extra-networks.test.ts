// spec.extraNetworks: each hostname resolved like the server's own (one A record, the VLAN rule,
// the port group template), NICs told apart by port group and order, the missing ones added to an
// existing VM by one task, and nothing added when a port group is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { effectiveNetwork } from "../../src/api/defaults.js";
import type { VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import { resolveExtraNetworks, type ExtraNetwork } from "../../src/naming/extra-networks.js";
import type { ReconcileContext, StepOutcome } from "../../src/reconcile/engine/context.js";
import { nicRoles } from "../../src/reconcile/steps/extra-nics.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { PortGroupNotFound, type NicRecord } from "../../src/vsphere/vcenter.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const zone: Record<string, string[]> = {
  "web-prod-1-bk.example.test": ["10.12.40.7"],
  "web-prod-1-st.example.test": ["10.12.50.7"],
  "web-prod-1-same.example.test": ["10.12.30.8"],
  "two-vlans.example.test": ["10.12.40.1", "10.12.41.1"],
};
const lookup = async (name: string) => zone[name] ?? ("notfound" as const);
const net = effectiveNetwork({} as never);

test("extra hostnames resolve to address, VLAN and port group, in spec order", async () => {
  const got = await resolveExtraNetworks(
    ["web-prod-1-st.example.test", "web-prod-1-bk.example.test"],
    net,
    lookup,
  );
  assert.deepEqual(got, [
    {
      hostname: "web-prod-1-st.example.test",
      address: "10.12.50.7",
      vlan: 50,
      portGroup: "VLAN-50",
    },
    {
      hostname: "web-prod-1-bk.example.test",
      address: "10.12.40.7",
      vlan: 40,
      portGroup: "VLAN-40",
    },
  ]);
});

test("an extra hostname without an A record: NameNotResolvable naming it", async () => {
  await assert.rejects(
    resolveExtraNetworks(["web-prod-1-bk.example.test", "nope.example.test"], net, lookup),
    (err: unknown) =>
      err instanceof StepError &&
      err.reason === "NameNotResolvable" &&
      err.message.startsWith("Extra network hostname nope.example.test has no A record"),
  );
  await assert.rejects(
    resolveExtraNetworks(["two-vlans.example.test"], net, lookup),
    (err: unknown) => err instanceof StepError && err.reason === "AmbiguousAddress",
  );
});

const nic = (key: number, portGroup: string): NicRecord => ({
  key,
  label: `nic ${key}`,
  portGroup,
  connected: true,
  startConnected: true,
});
const extra = (hostname: string, vlan: number): ExtraNetwork => ({
  hostname,
  address: `10.12.${vlan}.7`,
  vlan,
  portGroup: `VLAN-${vlan}`,
});

test("NIC roles: own NIC first on its port group, extras take the next ones in order", () => {
  const { status, missing } = nicRoles(
    [nic(4000, "VLAN-30"), nic(4001, "Boot-VLAN"), nic(4002, "VLAN-30"), nic(4003, "VLAN-40")],
    { servicePortGroup: "VLAN-30", bootPortGroup: "Boot-VLAN" },
    [extra("a.example.test", 40), extra("b.example.test", 30), extra("c.example.test", 50)],
  );
  assert.deepEqual(
    status.map((s) => `${s.role}:${s.portGroup}:${s.hostname ?? ""}`),
    [
      "service:VLAN-30:",
      "boot:Boot-VLAN:",
      "extra:VLAN-30:b.example.test",
      "extra:VLAN-40:a.example.test",
    ],
  );
  assert.deepEqual(
    missing.map((m) => m.hostname),
    ["c.example.test"],
  );
  // An unlisted NIC stays a service NIC; nothing is missing without extras.
  const plain = nicRoles(
    [nic(4000, "VLAN-30"), nic(4001, "VLAN-60")],
    { servicePortGroup: "VLAN-30", bootPortGroup: "B" },
    [],
  );
  assert.deepEqual(
    plain.status.map((s) => s.role),
    ["service", "service"],
  );
  assert.equal(plain.missing.length, 0);
});

// --- the vm step ---------------------------------------------------------------------------------

const CLASS = {
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "guestinfo", assumeInstalled: true },
  hardware: { cpus: 2, memoryMiB: 2048 },
};
const INSTALLED: VirtualServerStatus = {
  install: { startedAt: "2026-01-01T00:00:00Z", completedAt: "2026-01-01T00:01:00Z" },
};

async function reconcile(
  vc: FakeVSphere,
  status: VirtualServerStatus,
  extras: ExtraNetwork[],
): Promise<{ out: StepOutcome; ctx: ReconcileContext }> {
  const ctx = stepContext(structuredClone(status), CLASS);
  ctx.vs.spec.extraNetworks = extras.map((e) => ({ hostname: e.hostname }));
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  ctx.extraNetworks = extras;
  return { out: await vmStep({ get: async () => vc }).run(ctx), ctx };
}
const serverVM = (vc: FakeVSphere, nics: NicRecord[]) =>
  vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    extraConfig: { "vsop.owner-uid": "u", "vsop.owner": "n/w" },
    nics,
  });

test("vm step: a new VM is created with one NIC per extra network after its own", async () => {
  const vc = new FakeVSphere();
  const extras = [extra("a.example.test", 40)];
  let r = await reconcile(vc, { vm: { name: "web-prod-1" } }, extras);
  assert.equal(r.ctx.status.vm?.task?.operation, "CreateVM");
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, extras);
  const vm = vc.findByName("web-prod-1")[0]!;
  assert.deepEqual(
    vm.nics.map((n) => n.portGroup),
    ["VLAN-30", "VLAN-40"],
  );
});

test("vm step: an extra network added to an existing VM by one task, then listed as extra", async () => {
  const vc = new FakeVSphere();
  const vm = serverVM(vc, [nic(4000, "VLAN-30")]);
  const extras = [extra("a.example.test", 40), extra("b.example.test", 30)];
  let r = await reconcile(vc, INSTALLED, extras);
  assert.equal(r.out.done, false);
  assert.equal(r.ctx.status.vm?.task?.operation, "AddNICs");
  assert.deepEqual(vc.started, [`AddNics ${vm.moRef}`]);
  vc.endAll();
  r = await reconcile(vc, r.ctx.status, extras);
  assert.equal(r.out.done, true);
  assert.deepEqual(
    r.ctx.status.vm?.nics?.map((n) => [n.role, n.portGroup, n.hostname, n.address, n.vlan]),
    [
      ["service", "VLAN-30", undefined, undefined, undefined],
      ["extra", "VLAN-40", "a.example.test", "10.12.40.7", 40],
      ["extra", "VLAN-30", "b.example.test", "10.12.30.7", 30],
    ],
  );
  // Nothing more to add: no second task.
  r = await reconcile(vc, r.ctx.status, extras);
  assert.equal(r.out.done, true);
  assert.equal(vc.started.length, 1);
});

test("vm step: an extra network whose port group is missing: VLANPortGroupMissing, nothing added", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, [nic(4000, "VLAN-30")]);
  vc.checkPortGroup = (async (_dc: string, name: string) => {
    if (name === "VLAN-40") throw new PortGroupNotFound(name, "DC0");
  }) as unknown as FakeVSphere["checkPortGroup"];
  await assert.rejects(
    reconcile(vc, INSTALLED, [extra("a.example.test", 40)]),
    (err: unknown) =>
      err instanceof StepError &&
      err.reason === "VLANPortGroupMissing" &&
      err.message.includes("extra network a.example.test"),
  );
  assert.deepEqual(vc.started, []);
  // Before creation too: no VM is created.
  const fresh = new FakeVSphere();
  fresh.checkPortGroup = vc.checkPortGroup;
  await assert.rejects(
    reconcile(fresh, { vm: { name: "web-prod-1" } }, [extra("a.example.test", 40)]),
    /VLAN-40/,
  );
  assert.deepEqual(fresh.started, []);
});

test("vm step: no NIC is added while the install runs", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, [nic(4000, "VLAN-30")]);
  const installing = { install: { startedAt: "2026-01-01T00:00:00Z" } };
  await reconcile(vc, installing, [extra("a.example.test", 40)]);
  assert.ok(!vc.started.some((s) => s.startsWith("AddNics")));
});

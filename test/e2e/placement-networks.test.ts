// spec.extraNetworks on the stack's vcsim and dnsmasq, checked with govc device.info: a server
// created with an extra network gets its NIC on the extra address's VLAN port group (VLAN-10)
// after its own (VLAN-30), listed in status.vm.nics with role extra; an extra network added to a
// running server's spec gets one NIC by a reconfiguration; an extra hostname without an A record
// is NameNotResolvable naming it with no VM created, and goes on once the record exists; an extra
// VLAN without a port group (VLAN-77) is VLANPortGroupMissing, with no VM created on a new server
// and no NIC added on an existing one.
// Storage: placement.storagePolicy looked up by name at vcsim's SPBM endpoint (/pbm): a known
// policy gives a VM whose status.vm.datastore names its datastore; an unknown one is
// StoragePolicyNotFound with no VM. vcsim ignores the vmProfile a VM is created with and
// answers every compatibility check with all datastores, so neither is checked here (unit tests
// check the spec and the filtering). placement.datastoreCluster: a StoragePod with Storage DRS
// on, holding a datastore made for the test; the VM goes where RecommendDatastores says and
// status.vm.datastore names it (govc vm.info); an unknown cluster is DatastoreClusterNotFound.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  kubectlTry,
  removeDNSNames,
  startOperator,
  waitFor,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer, virtualServerClass } from "../support/fixtures.js";
import { findVMs, govc, portGroupNames, destroyVMs } from "../support/govc.js";

const RUN = randomBytes(3).toString("hex");
const CLASS = "nx-net";
const LABELS = { "vsop-test": "placement-networks" };
const MULTI = { name: "multi", host: "nx-prod-1.example.test", vm: "nx-prod-1" };
const ADD = { name: "later", host: "nxadd-prod-1.example.test", vm: "nxadd-prod-1" };
const UNRES = { name: "unres", host: "nxbad-prod-1.example.test", vm: "nxbad-prod-1" };
const NOPG = { name: "nopg", host: "nxpg-prod-1.example.test", vm: "nxpg-prod-1" };
const GOLD = { name: "gold", host: "nxsp-prod-1.example.test", vm: "nxsp-prod-1" };
const NOSP = { name: "nosp", host: "nxspbad-prod-1.example.test", vm: "nxspbad-prod-1" };
const POLICY_CLASS = "nx-policy";
const BAD_POLICY_CLASS = "nx-nopolicy";
const UNKNOWN_POLICY = `Platinum ${RUN}`;
const HOST = "/DC0/host/DC0_C0/DC0_C0_H0";
const POD = `nxpod-${RUN}`;
const POD_DS = `nxpodds-${RUN}`;
const POD_CLASS = "nx-pod";
const BAD_POD_CLASS = "nx-nopod";
const PODDED = { name: "podded", host: "nxpod-prod-1.example.test", vm: "nxpod-prod-1" };
const NOPOD = { name: "nopod", host: "nxnopod-prod-1.example.test", vm: "nxnopod-prod-1" };

/** A class placing VMs in a datastore cluster (the fixtures' placement has a datastore). */
function podClass(name: string, pod: string) {
  const cls = virtualServerClass(name, { boot: { method: "guestinfo", assumeInstalled: true } });
  cls.spec.placement = { datacenter: "DC0", cluster: "DC0_C0", datastoreCluster: pod };
  return cls;
}
const EXTRA = "nx-prod-1-bk.example.test";
const LATER = "nxadd-prod-1-bk.example.test";
const LATER_77 = "nxadd-prod-1-st.example.test";
const UNKNOWN = `nxbad-bk-${RUN}.example.test`;
const NOPG_77 = "nxpg-prod-1-st.example.test";
const HOSTS: [string, string][] = [
  ["10.12.30.181", MULTI.host],
  ["10.12.10.181", EXTRA],
  ["10.12.30.182", ADD.host],
  ["10.12.10.182", LATER],
  ["10.12.77.182", LATER_77],
  ["10.12.30.183", UNRES.host],
  ["10.12.30.184", NOPG.host],
  ["10.12.77.184", NOPG_77],
  ["10.12.30.185", GOLD.host],
  ["10.12.30.186", NOSP.host],
  ["10.12.30.187", PODDED.host],
  ["10.12.30.188", NOPOD.host],
];
let ns: string;
let op: Operator;

interface NicStatus {
  role: string;
  portGroup: string;
  hostname?: string;
  address?: string;
  vlan?: number;
}
const nicsOf = (vs: VS | undefined) =>
  ((vs?.status?.vm as { nics?: NicStatus[] } | undefined)?.nics ?? []).map((n) =>
    [n.role, n.portGroup, n.hostname ?? "", n.address ?? "", n.vlan ?? ""].join(" "),
  );

/** The port groups of the VM's NICs in device order (govc device.info). */
function vmPortGroups(vm: string): string[] {
  const names = portGroupNames();
  const out = JSON.parse(govc(["device.info", "-json", "-vm", vm, "ethernet-*"])) as {
    devices: { key: number; backing?: { port?: { portgroupKey?: string } } }[];
  };
  return out.devices
    .sort((a, b) => a.key - b.key)
    .map((d) => names[d.backing?.port?.portgroupKey ?? ""] ?? "?");
}

function destroyLeftovers(): void {
  destroyVMs([MULTI, ADD, UNRES, NOPG, GOLD, NOSP, PODDED, NOPOD].map((s) => s.vm));
}

/** VMCreated: the VM step is done (no Puppet node answers here, so Ready stays False). */
const created = (name: string) => cond(getVS(ns, name), "VMCreated");

before(() => {
  installVsop();
  destroyLeftovers();
  ns = createNamespace("placement-networks");
  const boot = { method: "guestinfo", assumeInstalled: true };
  applyClass(CLASS, { boot });
  const placement = { datacenter: "DC0", cluster: "DC0_C0", datastore: "LocalDS_0" };
  applyClass(POLICY_CLASS, {
    boot,
    placement: { ...placement, storagePolicy: "vSAN Default Storage Policy" },
  });
  applyClass(BAD_POLICY_CLASS, {
    boot,
    placement: { ...placement, storagePolicy: UNKNOWN_POLICY },
  });
  // A datastore cluster with Storage DRS on, holding one datastore made for this run.
  const dir = mkdtempSync(join(tmpdir(), "nxpod-"));
  govc(["datastore.create", "-type", "local", "-name", POD_DS, "-path", dir, HOST]);
  govc(["folder.create", "-pod", `/DC0/datastore/${POD}`]);
  govc(["object.mv", `/DC0/datastore/${POD_DS}`, `/DC0/datastore/${POD}`]);
  govc(["datastore.cluster.change", "-drs-enabled", `/DC0/datastore/${POD}`]);
  apply(podClass(POD_CLASS, POD), podClass(BAD_POD_CLASS, `${POD}-nosuch`));
  addDNSRecords(HOSTS);
  op = startOperator("placement-networks", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=placement-networks",
    "--resync-period",
    "5s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  removeDNSNames([...HOSTS.map(([, h]) => h), UNKNOWN]);
  kubectl(["delete", "vsrvc", CLASS, POLICY_CLASS, BAD_POLICY_CLASS, POD_CLASS, BAD_POD_CLASS]);
  // The run's datastore cluster stays (its names are the run's own): vcsim implements neither
  // moving a datastore out of a StoragePod (NotSupported), nor RemoveDatastore, nor Destroy_Task
  // of a StoragePod.
  destroyLeftovers();
});

test("a server created with an extra network: its NIC on the extra VLAN's port group, role extra", async () => {
  apply(
    virtualServer(ns, MULTI.name, MULTI.host, CLASS, LABELS, {
      extraNetworks: [{ hostname: EXTRA }],
    }),
  );
  const vs = await waitFor(
    "multi VMCreated",
    () => {
      const v = getVS(ns, MULTI.name);
      return cond(v, "VMCreated")?.status === "True" ? v : undefined;
    },
    120_000,
  );
  assert.deepEqual(nicsOf(vs), ["service VLAN-30   ", `extra VLAN-10 ${EXTRA} 10.12.10.181 10`]);
  assert.deepEqual(
    vmPortGroups(MULTI.vm),
    ["VLAN-30", "VLAN-10"],
    "govc device.info shows the same",
  );
  assert.match(
    cond(vs, "NameResolved")!.message,
    new RegExp(
      `extra network ${EXTRA.replaceAll(".", "\\.")}: 10\\.12\\.10\\.181 \\(VLAN 10, port group VLAN-10\\)`,
    ),
  );
});

test("an extra network added to a running server: one NIC added by a reconfiguration", async () => {
  apply(virtualServer(ns, ADD.name, ADD.host, CLASS, LABELS));
  await waitFor("later VMCreated", () => created(ADD.name)?.status === "True", 120_000);
  assert.deepEqual(vmPortGroups(ADD.vm), ["VLAN-30"]);

  // A VLAN without a port group: reported by reason, nothing added.
  apply(
    virtualServer(ns, ADD.name, ADD.host, CLASS, LABELS, {
      extraNetworks: [{ hostname: LATER_77 }],
    }),
  );
  const bad = await waitFor("later VLANPortGroupMissing", () => {
    const v = getVS(ns, ADD.name);
    return cond(v, "Ready")?.reason === "VLANPortGroupMissing" ? v : undefined;
  });
  assert.match(
    cond(bad, "Ready")!.message,
    new RegExp(`"VLAN-77" for VLAN 77 \\(extra network ${LATER_77.replaceAll(".", "\\.")}\\)`),
  );
  assert.deepEqual(vmPortGroups(ADD.vm), ["VLAN-30"], "no NIC was added");

  apply(
    virtualServer(ns, ADD.name, ADD.host, CLASS, LABELS, { extraNetworks: [{ hostname: LATER }] }),
  );
  const vs = await waitFor(
    "later's extra NIC in status",
    () => {
      const v = getVS(ns, ADD.name);
      return nicsOf(v).length === 2 && cond(v, "VMCreated")?.status === "True" ? v : undefined;
    },
    90_000,
  );
  assert.deepEqual(nicsOf(vs), ["service VLAN-30   ", `extra VLAN-10 ${LATER} 10.12.10.182 10`]);
  assert.deepEqual(vmPortGroups(ADD.vm), ["VLAN-30", "VLAN-10"]);
  // Steady: a few resyncs later, still one extra NIC.
  await new Promise((r) => setTimeout(r, 12_000));
  assert.deepEqual(vmPortGroups(ADD.vm), ["VLAN-30", "VLAN-10"], "the NIC was added once");
});

test("an extra hostname that does not resolve: NameNotResolvable naming it, no VM; once in DNS it goes on", async () => {
  apply(
    virtualServer(ns, UNRES.name, UNRES.host, CLASS, LABELS, {
      extraNetworks: [{ hostname: UNKNOWN }],
    }),
  );
  const vs = await waitFor("unres NameNotResolvable", () => {
    const v = getVS(ns, UNRES.name);
    return cond(v, "Ready")?.reason === "NameNotResolvable" ? v : undefined;
  });
  assert.equal(cond(vs, "NameResolved")?.status, "False");
  assert.match(
    cond(vs, "NameResolved")!.message,
    new RegExp(`Extra network hostname ${UNKNOWN.replaceAll(".", "\\.")} has no A record`),
  );
  assert.equal(vs.status?.phase, "Waiting");
  assert.deepEqual(findVMs(UNRES.vm), [], "no VM was created");

  addDNSRecords([["10.12.10.183", UNKNOWN]]);
  await waitFor(
    "unres VMCreated once the extra name resolves",
    () => created(UNRES.name)?.status === "True",
    120_000,
  );
  assert.deepEqual(vmPortGroups(UNRES.vm), ["VLAN-30", "VLAN-10"]);
});

test("an extra VLAN without a port group on a new server: VLANPortGroupMissing, no VM", async () => {
  apply(
    virtualServer(ns, NOPG.name, NOPG.host, CLASS, LABELS, {
      extraNetworks: [{ hostname: NOPG_77 }],
    }),
  );
  const vs = await waitFor("nopg VLANPortGroupMissing", () => {
    const v = getVS(ns, NOPG.name);
    return cond(v, "Ready")?.reason === "VLANPortGroupMissing" ? v : undefined;
  });
  assert.equal(cond(vs, "VMCreated")?.reason, "VLANPortGroupMissing");
  assert.equal(vs.status?.phase, "Failed");
  assert.deepEqual(findVMs(NOPG.vm), [], "no VM was created");
});

test("the API server refuses more than 4 extra networks and a duplicate hostname", () => {
  const many = [1, 2, 3, 4, 5].map((i) => ({ hostname: `nx-${i}.example.test` }));
  const cases: [object[], RegExp][] = [
    [many, /must have at most 4 items|Too many/],
    [[{ hostname: EXTRA }, { hostname: EXTRA }], /Duplicate value/],
  ];
  for (const [extraNetworks, why] of cases) {
    const vs = virtualServer(ns, "refused", "nxref-prod-1.example.test", CLASS, LABELS, {
      extraNetworks,
    });
    const r = kubectlTry(["apply", "--dry-run=server", "-f", "-"], JSON.stringify(vs));
    assert.equal(r.ok, false, `accepted: ${r.out}`);
    assert.match(r.out, why);
  }
});

test("a storage policy vCenter has: the VM is created, status.vm.datastore names its datastore", async () => {
  apply(virtualServer(ns, GOLD.name, GOLD.host, POLICY_CLASS, LABELS));
  const vs = await waitFor(
    "gold VMCreated",
    () => {
      const v = getVS(ns, GOLD.name);
      return cond(v, "VMCreated")?.status === "True" ? v : undefined;
    },
    120_000,
  );
  assert.equal((vs.status?.vm as { datastore?: string } | undefined)?.datastore, "LocalDS_0");
  assert.equal(findVMs(GOLD.vm).length, 1);
});

test("a storage policy vCenter does not have: StoragePolicyNotFound, no VM", async () => {
  apply(virtualServer(ns, NOSP.name, NOSP.host, BAD_POLICY_CLASS, LABELS));
  const vs = await waitFor("nosp StoragePolicyNotFound", () => {
    const v = getVS(ns, NOSP.name);
    return cond(v, "Ready")?.reason === "StoragePolicyNotFound" ? v : undefined;
  });
  assert.equal(cond(vs, "VMCreated")?.reason, "StoragePolicyNotFound");
  assert.match(
    cond(vs, "VMCreated")!.message,
    /vSAN Default Storage Policy/,
    "names the known ones",
  );
  assert.equal(vs.status?.phase, "Failed");
  assert.deepEqual(findVMs(NOSP.vm), [], "no VM was created");
});

test("a datastore cluster: Storage DRS chooses the datastore, status.vm.datastore names it", async () => {
  apply(virtualServer(ns, PODDED.name, PODDED.host, POD_CLASS, LABELS));
  const vs = await waitFor(
    "podded VMCreated",
    () => {
      const v = getVS(ns, PODDED.name);
      return cond(v, "VMCreated")?.status === "True" ? v : undefined;
    },
    120_000,
  );
  assert.equal((vs.status?.vm as { datastore?: string } | undefined)?.datastore, POD_DS);
  const out = JSON.parse(govc(["vm.info", "-json", PODDED.vm])) as {
    virtualMachines: { config: { files: { vmPathName: string } } }[];
  };
  const path = out.virtualMachines[0]!.config.files.vmPathName;
  assert.ok(path.startsWith(`[${POD_DS}]`), `govc vm.info: ${path}`);
});

test("a datastore cluster vCenter does not have: DatastoreClusterNotFound, no VM", async () => {
  apply(virtualServer(ns, NOPOD.name, NOPOD.host, BAD_POD_CLASS, LABELS));
  const vs = await waitFor("nopod DatastoreClusterNotFound", () => {
    const v = getVS(ns, NOPOD.name);
    return cond(v, "Ready")?.reason === "DatastoreClusterNotFound" ? v : undefined;
  });
  assert.equal(vs.status?.phase, "Failed");
  assert.deepEqual(findVMs(NOPOD.vm), [], "no VM was created");
});

test("the API server refuses a class with both datastore and datastoreCluster, or neither", () => {
  for (const placement of [
    { datacenter: "DC0", datastore: "LocalDS_0", datastoreCluster: POD },
    { datacenter: "DC0" },
  ]) {
    const cls = virtualServerClass("nx-refused");
    cls.spec.placement = placement;
    const r = kubectlTry(["apply", "--dry-run=server", "-f", "-"], JSON.stringify(cls));
    assert.equal(r.ok, false, `accepted: ${r.out}`);
    assert.match(r.out, /exactly one of placement.datastore and placement.datastoreCluster/);
  }
});

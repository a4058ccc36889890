// Placement and inventory on the stack's vcsim, every outcome checked with govc: the class's
// tags and the hostname's apptype/environment tags attached to the VM at creation (vsop's two
// categories created single-cardinality), custom attributes set, both kept in sync when the
// class changes; a class naming a tag category vCenter does not have fails by reason before
// anything is created, and goes on once the category exists. Anti-affinity: servers sharing
// apptype and environment kept apart by one DRS rule (govc cluster.rule.ls), created with the
// second server, extended and shrunk as servers come and go, removed with the last but one; a
// group larger than the cluster's two hosts is AntiAffinityUnsatisfiable on its servers.
// Firmware: EFI with Secure Boot (govc vm.info). Linked clones: a template without a snapshot is
// TemplateHasNoSnapshot with no VM, and cloned once it has one (vcsim ignores the child-disk
// backing itself, so only the outcome is checked here; unit tests check the clone spec).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  nodeDown,
  nodeUp,
  removeDNSNames,
  startOperator,
  waitFor,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs, govc, destroyVMs } from "../support/govc.js";

const RUN = randomBytes(3).toString("hex");
const TAGGED = "plc-tagged";
const BROKEN = "plc-broken";
const TEAM = `team-${RUN}`;
const MISSING = `nosuch-${RUN}`;
const APART = "plc-apart";
const HOSTS: [string, string][] = [
  ["10.12.30.171", "plc-prod-1.example.test"],
  ["10.12.30.172", "plcbad-prod-1.example.test"],
  ["10.12.30.173", "aff-prod-1.example.test"],
  ["10.12.30.174", "aff-prod-2.example.test"],
  ["10.12.30.175", "aff-prod-3.example.test"],
  ["10.12.30.176", "efi-prod-1.example.test"],
  ["10.12.30.177", "lnk-prod-1.example.test"],
];
const EFI = "plc-efi";
const LINKED = "plc-linked";
const TEMPLATE = `plc-tmpl-${RUN}`;
const AFF = [1, 2, 3].map((i) => ({
  name: `aff-${i}`,
  host: `aff-prod-${i}.example.test`,
  vm: `aff-prod-${i}`,
}));
const RULE = "vsop-aff-prod";
const VM = "plc-prod-1";
const BAD_VM = "plcbad-prod-1";
const LABELS = { "vsop-test": "placement" };
let ns: string;
let op: Operator;

interface GovcTag {
  id: string;
  name: string;
  category_id: string;
}

/** "category/name" of every tag attached to the VM, sorted (govc tags.attached.ls -r). */
function attachedTags(vm: string): string[] {
  const categories = JSON.parse(govc(["tags.category.ls", "-json"])) as {
    id: string;
    name: string;
  }[];
  const byId = new Map(categories.map((c) => [c.id, c.name]));
  const out = JSON.parse(govc(["tags.attached.ls", "-l", "-json", "-r", `/DC0/vm/${vm}`])) as
    { tags?: GovcTag[] | null }[] | null;
  return (out ?? [])
    .flatMap((o) => o.tags ?? [])
    .map((t) => `${byId.get(t.category_id)}/${t.name}`)
    .sort();
}

/** A custom attribute's value on the VM (govc fields.info), "" when unset. */
function attribute(vm: string, name: string): string {
  const out = JSON.parse(govc(["fields.info", "-json", "-n", name, `/DC0/vm/${vm}`])) as {
    info?: { value: string }[] | null;
  };
  return out.info?.[0]?.value ?? "";
}

function category(name: string): { cardinality: string; associable_types?: string[] } | undefined {
  const list = JSON.parse(govc(["tags.category.ls", "-json"])) as {
    name: string;
    cardinality: string;
    associable_types?: string[];
  }[];
  return list.find((c) => c.name === name);
}

const CLUSTER = "/DC0/host/DC0_C0";

/** The VM names of a cluster rule (govc cluster.rule.ls), sorted; undefined when there is none. */
function ruleVMs(name: string): string[] | undefined {
  const rules = govc(["cluster.rule.ls", "-cluster", CLUSTER]).split("\n");
  if (!rules.includes(name)) return undefined;
  return govc(["cluster.rule.ls", "-cluster", CLUSTER, "-name", name])
    .split("\n")
    .filter(Boolean)
    .sort();
}

function destroyLeftovers(): void {
  destroyVMs([VM, BAD_VM, ...AFF.map((a) => a.vm), "efi-prod-1", "lnk-prod-1"]);
}

const vsTags = (vs: VS | undefined) =>
  ((vs?.status?.vm as { tags?: { category: string; name: string }[] } | undefined)?.tags ?? [])
    .map((t) => `${t.category}/${t.name}`)
    .sort();

before(() => {
  installVsop();
  destroyLeftovers();
  ns = createNamespace("placement");
  govc(["tags.category.create", "-m", "-t", "VirtualMachine", TEAM]);
  const inventory = {
    tags: [{ category: TEAM, name: "payments" }],
    attributes: { [`owner-${RUN}`]: "team-payments" },
  };
  const boot = { method: "guestinfo", assumeInstalled: true };
  applyClass(TAGGED, { boot, inventory });
  applyClass(BROKEN, { boot, inventory: { tags: [{ category: MISSING, name: "x" }] } });
  applyClass(APART, { boot, placement: { antiAffinity: "ByAppTypeAndEnvironment" } });
  applyClass(EFI, { boot, hardware: { firmware: "efi", secureBoot: true } });
  govc(["vm.create", "-net", "VLAN-30", "-on=false", TEMPLATE]);
  applyClass(LINKED, { boot, hardware: { template: TEMPLATE, cloneMode: "Linked" } });
  addDNSRecords(HOSTS);
  if (ruleVMs(RULE)) govc(["cluster.rule.remove", "-cluster", CLUSTER, "-name", RULE]);
  for (const a of AFF) nodeUp(a.host);
  op = startOperator("placement", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=placement",
    "--resync-period",
    "5s",
  ]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  removeDNSNames(HOSTS.map(([, h]) => h));
  for (const a of AFF) nodeDown(a.host);
  for (const c of [TEAM, MISSING]) if (category(c)) govc(["tags.category.rm", "-f", c]);
  kubectl(["delete", "vsrvc", TAGGED, BROKEN, APART, EFI, LINKED, "--ignore-not-found"]);
  destroyLeftovers(); // the unmarked vcsim clone (see the Linked test)
  govc(["vm.destroy", TEMPLATE]);
});

test("tags and custom attributes set at creation, shown in status.vm.tags", async () => {
  apply(virtualServer(ns, "tagged", HOSTS[0]![1], TAGGED, LABELS));
  const want = ["apptype/plc", "environment/prod", `${TEAM}/payments`];
  const vs = await waitFor(
    "status.vm.tags of tagged",
    () => {
      const v = getVS(ns, "tagged");
      return vsTags(v).length === 3 ? v : undefined;
    },
    90_000,
  );
  assert.deepEqual(vsTags(vs), want);
  assert.deepEqual(attachedTags(VM), want, "govc tags.attached.ls shows the same");
  assert.equal(attribute(VM, `owner-${RUN}`), "team-payments");
  for (const c of ["apptype", "environment"]) {
    const info = category(c);
    assert.equal(info?.cardinality, "SINGLE", `vsop's category ${c} is single-cardinality`);
  }
  assert.equal(cond(vs, "VMCreated")?.status, "True");
});

test("a class change: the dropped tag detached, the new one attached, the attribute updated", async () => {
  govc(["tags.create", "-c", TEAM, "audit"]); // a tag someone else attaches: left alone
  govc(["tags.attach", "-c", TEAM, "audit", `/DC0/vm/${VM}`]);
  applyClass(TAGGED, {
    boot: { method: "guestinfo", assumeInstalled: true },
    inventory: {
      tags: [{ category: TEAM, name: "cards" }],
      attributes: { [`owner-${RUN}`]: "team-cards" },
    },
  });
  const want = ["apptype/plc", "environment/prod", `${TEAM}/cards`];
  await waitFor("the new tags in status", () => vsTags(getVS(ns, "tagged")).join() === want.join());
  assert.deepEqual(attachedTags(VM), [...want, `${TEAM}/audit`].sort());
  await waitFor("the attribute updated", () => attribute(VM, `owner-${RUN}`) === "team-cards");
});

test("a tag category vCenter does not have: TagCategoryNotFound, no VM, nothing created; fixed, it goes on", async () => {
  apply(virtualServer(ns, "broken", HOSTS[1]![1], BROKEN, LABELS));
  const vs = await waitFor("broken Ready=False TagCategoryNotFound", () => {
    const v = getVS(ns, "broken");
    return cond(v, "Ready")?.reason === "TagCategoryNotFound" ? v : undefined;
  });
  assert.equal(cond(vs, "VMCreated")?.reason, "TagCategoryNotFound");
  assert.match(cond(vs, "Ready")!.message, new RegExp(`"${MISSING}".*does not exist`));
  assert.equal(vs.status?.phase, "Failed");
  assert.deepEqual(findVMs(BAD_VM), [], "no VM was created");
  assert.equal(category(MISSING), undefined, "vsop did not create the class's category");
  assert.equal((vs.status?.vm as { moRef?: string } | undefined)?.moRef, undefined);

  // Once the category exists, the server goes on: its VM is created and tagged.
  govc(["tags.category.create", "-t", "VirtualMachine", MISSING]);
  await waitFor(
    "broken tagged after the category was created",
    () => vsTags(getVS(ns, "broken")).includes(`${MISSING}/x`),
    90_000,
  );
  assert.deepEqual(attachedTags(BAD_VM), ["apptype/plcbad", "environment/prod", `${MISSING}/x`]);
});

const readyReason = (name: string) => cond(getVS(ns, name), "Ready");
const ruleOf = (name: string) =>
  (getVS(ns, name)?.status?.vm as { antiAffinityRule?: string } | undefined)?.antiAffinityRule;

function waitRule(want: string[] | undefined, what: string) {
  return waitFor(what, () => JSON.stringify(ruleVMs(RULE)) === JSON.stringify(want), 90_000);
}

function waitReady(names: string[], status: string, reason: string) {
  return waitFor(
    `${names.join(", ")} Ready=${status} (${reason})`,
    () =>
      names.every((n) => {
        const c = readyReason(n);
        return c?.status === status && c.reason === reason;
      }),
    120_000,
  );
}

test("anti-affinity: one rule per apptype/environment, created with the second server", async () => {
  apply(virtualServer(ns, AFF[0]!.name, AFF[0]!.host, APART, LABELS));
  await waitReady([AFF[0]!.name], "True", "Provisioned");
  assert.equal(ruleVMs(RULE), undefined, "no rule for a group of one");
  apply(virtualServer(ns, AFF[1]!.name, AFF[1]!.host, APART, LABELS));
  await waitRule([AFF[0]!.vm, AFF[1]!.vm], "rule with two VMs");
  await waitReady([AFF[0]!.name, AFF[1]!.name], "True", "Provisioned");
  await waitFor("status.vm.antiAffinityRule on both", () =>
    [AFF[0]!.name, AFF[1]!.name].every((n) => ruleOf(n) === RULE),
  );
});

test("anti-affinity: a third server on two hosts extends the rule and is AntiAffinityUnsatisfiable on all", async () => {
  apply(virtualServer(ns, AFF[2]!.name, AFF[2]!.host, APART, LABELS));
  await waitRule(
    AFF.map((a) => a.vm),
    "rule extended to three VMs",
  );
  await waitReady(
    AFF.map((a) => a.name),
    "False",
    "AntiAffinityUnsatisfiable",
  );
  assert.match(readyReason(AFF[0]!.name)!.message, /3 VMs.*2 hosts/);
});

test("anti-affinity: deleting servers shrinks the rule, then removes it with the last but one", async () => {
  kubectl(["-n", ns, "delete", "vsrv", AFF[2]!.name, "--wait=false"]);
  await waitRule([AFF[0]!.vm, AFF[1]!.vm], "rule shrunk to two VMs");
  await waitReady([AFF[0]!.name, AFF[1]!.name], "True", "Provisioned");
  await waitFor("aff-3 gone", () => !getVS(ns, AFF[2]!.name), 90_000);
  assert.deepEqual(findVMs(AFF[2]!.vm), []);
  kubectl(["-n", ns, "delete", "vsrv", AFF[1]!.name, "--wait=false"]);
  await waitRule(undefined, "rule removed");
  await waitFor("aff-1 no longer in a rule", () => ruleOf(AFF[0]!.name) === undefined);
});

test("firmware efi with Secure Boot: the VM's config says so (govc vm.info)", async () => {
  apply(virtualServer(ns, "efi", "efi-prod-1.example.test", EFI, LABELS));
  await waitFor(
    "efi VMCreated",
    () => cond(getVS(ns, "efi"), "VMCreated")?.status === "True",
    90_000,
  );
  const info = JSON.parse(govc(["vm.info", "-json", "efi-prod-1"])) as {
    virtualMachines: {
      config: { firmware: string; bootOptions?: { efiSecureBootEnabled?: boolean } };
    }[];
  };
  const config = info.virtualMachines[0]!.config;
  assert.equal(config.firmware, "efi");
  assert.equal(config.bootOptions?.efiSecureBootEnabled, true);
});

test("a Linked clone of a template without a snapshot: TemplateHasNoSnapshot, no VM; with one: cloned", async () => {
  apply(virtualServer(ns, "linked", "lnk-prod-1.example.test", LINKED, LABELS));
  const vs = await waitFor("linked TemplateHasNoSnapshot", () => {
    const v = getVS(ns, "linked");
    return cond(v, "VMCreated")?.reason === "TemplateHasNoSnapshot" ? v : undefined;
  });
  assert.equal(cond(vs, "Ready")?.reason, "TemplateHasNoSnapshot");
  assert.match(cond(vs, "Ready")!.message, new RegExp(`${TEMPLATE} has no current snapshot`));
  assert.deepEqual(findVMs("lnk-prod-1"), [], "no VM was created");
  govc(["snapshot.create", "-vm", TEMPLATE, "base"]);
  // vcsim's CloneVM_Task drops the clone spec's extraConfig (vCenter applies it), so the clone
  // comes out without vsop's owner marker and the reconcile then reports it as VMNameConflict:
  // only the clone itself, made once the snapshot exists, is checked here.
  await waitFor(
    "the clone, once the template has a snapshot, and TemplateHasNoSnapshot cleared",
    () =>
      findVMs("lnk-prod-1").length === 1 &&
      cond(getVS(ns, "linked"), "VMCreated")?.reason !== "TemplateHasNoSnapshot",
    90_000,
  );
});

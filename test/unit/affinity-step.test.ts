// The anti-affinity steps with a fake cluster: who is in a group, which rule change is started
// (and never waited for), what is reported when the group outgrows the cluster, and that a
// deleted server leaves the rule before its VM goes.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServer, VirtualServerClass } from "../../src/api/types.js";
import { effectiveClass } from "../../src/api/effective-class.js";
import type { AntiAffinityRule } from "../../src/vsphere/cluster-rules.js";
import { ruleChange } from "../../src/vsphere/cluster-rules.js";
import { encode, TypedText } from "../../src/vsphere/xml.js";
import type { InFlightTask, VMRecord } from "../../src/vsphere/vcenter.js";
import type { TaskState } from "../../src/vsphere/task-state.js";
import {
  affinitySteps,
  groupMembers,
  ruleName,
  type AffinityPort,
} from "../../src/reconcile/steps/affinity-step.js";
import type { ReconcileContext } from "../../src/reconcile/engine/context.js";
import { StepError } from "../../src/errors.js";
import { pino } from "pino";
import { ServerIndex } from "../../src/reconcile/engine/server-index.js";

const placement = (antiAffinity?: string) => ({
  datacenter: "DC0",
  cluster: "C0",
  datastore: "ds",
  ...(antiAffinity ? { antiAffinity } : {}),
});
const cls = (name: string, antiAffinity = "ByAppTypeAndEnvironment") =>
  ({
    metadata: { name },
    spec: { vcenter: { url: "https://vc/sdk" }, placement: placement(antiAffinity) },
  }) as unknown as VirtualServerClass;

function server(i: number, className = "apart", env = "prod", deleting = false): VirtualServer {
  return {
    metadata: {
      name: `web-${i}`,
      namespace: "n",
      uid: `u${i}`,
      labels: {
        "provisioning.vsop.dev/apptype": "web",
        "provisioning.vsop.dev/environment": env,
      },
      ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
    },
    spec: { hostname: `web-${env}-${i}.example.test`, className },
  } as unknown as VirtualServer;
}

class FakeCluster implements AffinityPort {
  rules: AntiAffinityRule[] = [];
  hosts = 2;
  tasks = new Map<string, { state: TaskState; apply: () => void }>();
  started: string[] = [];
  vms = new Map<string, string>(); // uid -> moRef
  private inflight = new Map<string, InFlightTask>();
  private n = 0;
  synced = () => true;
  lastError = () => undefined;
  findByOwnerUID = (uid: string) => {
    const ref = this.vms.get(uid);
    return ref ? ({ moRef: ref, name: ref } as VMRecord) : undefined;
  };
  taskState = async (t: string) => this.tasks.get(t)!.state;
  track = (t: InFlightTask, key: string) => void this.inflight.set(key, t);
  inFlight = (key: string) => this.inflight.get(key);
  forget = (key: string) => void this.inflight.delete(key);
  clusterRules = async () => ({ rules: structuredClone(this.rules), hosts: this.hosts });
  startAntiAffinityRule = async (
    _dc: string,
    _cluster: string,
    op: "add" | "edit" | "remove",
    rule: { key?: number; name: string; vms: string[] },
  ) => {
    const ref = `task-${++this.n}`;
    this.started.push(`${op} ${rule.name} ${rule.vms.join(",")}`);
    this.tasks.set(ref, {
      state: { state: "running" },
      apply: () => {
        if (op === "remove") this.rules = this.rules.filter((r) => r.key !== rule.key);
        else if (op === "add")
          this.rules.push({ key: this.n, name: rule.name, enabled: true, vms: rule.vms });
        else this.rules = this.rules.map((r) => (r.key === rule.key ? { ...r, vms: rule.vms } : r));
      },
    });
    return ref;
  };
  endAll() {
    for (const t of this.tasks.values())
      if (t.state.state === "running") {
        t.apply();
        t.state = { state: "success" };
      }
  }
}

function setup(servers: VirtualServer[], classes = [cls("apart")]) {
  const fake = new FakeCluster();
  const woken: string[] = [];
  const steps = affinitySteps({
    pool: { get: async () => fake },
    inGroup: (apptype, environment) => ServerIndex.of(servers).inGroup(apptype, environment),
    getClass: (name) => classes.find((c) => c.metadata.name === name),
    wake: (key) => woken.push(key),
  });
  const ctxOf = (vs: VirtualServer): ReconcileContext => {
    const c = classes.find((x) => x.metadata.name === vs.spec.className)!;
    return {
      vs,
      cls: c,
      settings: effectiveClass(c, true),
      status: {},
      log: pino({ level: "silent" }),
    } as ReconcileContext;
  };
  return { fake, steps, ctxOf, woken };
}

test("rule names, group membership and the SOAP form of a rule change", () => {
  assert.equal(ruleName("web", "prod"), "vsop-web-prod");
  const servers = [
    server(1),
    server(2),
    server(3, "apart", "test"), // another environment
    server(4, "plain"), // a class without anti-affinity
    server(5, "apart", "prod", true), // being deleted
  ];
  const classes = [cls("apart"), cls("plain", "None")];
  const members = groupMembers({ vs: servers[0]!, cls: classes[0]! } as ReconcileContext, {
    inGroup: (apptype, environment) => ServerIndex.of(servers).inGroup(apptype, environment),
    getClass: (n) => classes.find((c) => c.metadata.name === n),
  });
  assert.deepEqual(
    members.map((s) => s.metadata.name),
    ["web-1", "web-2"],
  );
  const remove = encode("rulesSpec", ruleChange("remove", { key: 7, name: "x", vms: [] }));
  assert.match(remove, /<removeKey xsi:type="xsd:int">7<\/removeKey>/);
  const add = encode("rulesSpec", ruleChange("add", { name: "x", vms: ["vm-1", "vm-2"] }));
  assert.match(add, /xsi:type="ClusterAntiAffinityRuleSpec"/);
  assert.match(add, /<vm type="VirtualMachine">vm-1<\/vm><vm type="VirtualMachine">vm-2<\/vm>/);
  assert.ok(new TypedText("xsd:int", "1"));
});

test("anti-affinity without a cluster: InvalidClass", () => {
  const c = cls("x");
  delete (c.spec.placement as { cluster?: string }).cluster;
  assert.throws(() => effectiveClass(c), /needs placement.cluster/);
});

test("one server: no rule; the second: one add, not waited for; the group is woken", async () => {
  const servers = [server(1)];
  const { fake, steps, ctxOf, woken } = setup(servers);
  fake.vms.set("u1", "vm-1");
  const c1 = ctxOf(servers[0]!);
  assert.deepEqual(await steps.sync.run(c1), { done: true });
  assert.deepEqual(fake.started, []);
  assert.equal(c1.status.vm?.antiAffinityRule, undefined);

  servers.push(server(2));
  fake.vms.set("u2", "vm-2");
  const c2 = ctxOf(servers[1]!);
  assert.deepEqual(await steps.sync.run(c2), { done: true }, "the step goes on while it runs");
  assert.deepEqual(fake.started, ["add vsop-web-prod vm-1,vm-2"]);
  assert.equal(c2.recheckAfterSeconds, 1);
  assert.deepEqual(woken, ["n/web-1"]);
  await steps.sync.run(c1);
  assert.equal(fake.started.length, 1, "a running change is not started again");
  fake.endAll();
  await steps.sync.run(c1);
  assert.equal(fake.started.length, 1);
  assert.equal(c1.status.vm?.antiAffinityRule, "vsop-web-prod");
  assert.deepEqual(await steps.report.run(c1), { done: true });
});

test("more VMs than hosts: the rule is extended and every member is AntiAffinityUnsatisfiable", async () => {
  const servers = [server(1), server(2), server(3)];
  const { fake, steps, ctxOf } = setup(servers);
  for (const i of [1, 2, 3]) fake.vms.set(`u${i}`, `vm-${i}`);
  fake.rules = [{ key: 9, name: "vsop-web-prod", enabled: true, vms: ["vm-1", "vm-2"] }];
  const ctx = ctxOf(servers[2]!);
  await steps.sync.run(ctx);
  assert.deepEqual(fake.started, ["edit vsop-web-prod vm-1,vm-2,vm-3"]);
  await assert.rejects(steps.report.run(ctx), (err: StepError) => {
    assert.equal(err.reason, "AntiAffinityUnsatisfiable");
    assert.match(err.message, /3 VMs of 3 servers.*2 hosts/);
    return true;
  });
  fake.hosts = 3;
  fake.endAll();
  await steps.sync.run(ctx);
  assert.deepEqual(await steps.report.run(ctx), { done: true }, "a third host clears it");
});

test("a deleted server leaves the rule (waited for) before its VM goes; the last but one removes it", async () => {
  const servers = [server(1), server(2, "apart", "prod", true)];
  const { fake, steps, ctxOf } = setup(servers);
  fake.vms.set("u1", "vm-1");
  fake.vms.set("u2", "vm-2");
  fake.rules = [{ key: 9, name: "vsop-web-prod", enabled: true, vms: ["vm-1", "vm-2"] }];
  const ctx = ctxOf(servers[1]!);
  ctx.status.vm = { antiAffinityRule: "vsop-web-prod" };
  const first = await steps.sync.finalize!(ctx);
  assert.equal(first.done, false, "the VM is not destroyed while it is in the rule");
  assert.deepEqual(fake.started, ["remove vsop-web-prod "]);
  assert.equal((await steps.sync.finalize!(ctx)).done, false, "still running");
  fake.endAll();
  assert.deepEqual(await steps.sync.finalize!(ctx), { done: true });
  assert.deepEqual(fake.rules, []);
  assert.equal(ctx.status.vm?.antiAffinityRule, undefined);
});

test("two members reconciled at once start one change, not two", async () => {
  const servers = [server(1), server(2)];
  const { fake, steps, ctxOf } = setup(servers);
  fake.vms.set("u1", "vm-1");
  fake.vms.set("u2", "vm-2");
  const [c1, c2] = [ctxOf(servers[0]!), ctxOf(servers[1]!)];
  await Promise.all([steps.sync.run(c1), steps.sync.run(c2)]);
  assert.deepEqual(fake.started, ["add vsop-web-prod vm-1,vm-2"]);
  assert.equal(c2.recheckAfterSeconds, 1, "the other looks again shortly");
});

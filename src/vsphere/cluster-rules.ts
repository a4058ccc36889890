// DRS VM anti-affinity rules of a cluster: read from configurationEx.rule, changed by
// ReconfigureComputeResource_Task (a task: callers record it and never wait inside a reconcile).
import type { VSphereSession } from "./session.js";
import { MoRef, TypedText } from "./xml.js";
import { bool, get, isObject, items, moRef, num, str } from "./nodes.js";
import { retrieveOne } from "./properties.js";

export interface AntiAffinityRule {
  key: number;
  name: string;
  enabled: boolean;
  /** moRefs of the rule's VMs. */
  vms: string[];
  /** vCenter's verdict, when it gave one: false means DRS could not keep the VMs apart. */
  inCompliance?: boolean;
}

export interface ClusterRules {
  rules: AntiAffinityRule[];
  /** Hosts DRS can place VMs on (summary.numEffectiveHosts). */
  hosts: number;
}

export async function clusterRules(session: VSphereSession, cluster: MoRef): Promise<ClusterRules> {
  const props = await retrieveOne(session, cluster, ["configurationEx", "summary"]);
  const rules: AntiAffinityRule[] = [];
  for (const r of items(get(props.configurationEx, "rule"))) {
    if (!isObject(r) || str(r._type) !== "ClusterAntiAffinityRuleSpec") continue;
    const key = num(r.key);
    const name = str(r.name);
    if (key === undefined || name === undefined) continue;
    rules.push({
      key,
      name,
      enabled: bool(r.enabled) ?? true,
      vms: items(r.vm)
        .map((v) => moRef(v)?.value)
        .filter((v): v is string => !!v),
      inCompliance: bool(r.inCompliance),
    });
  }
  const summary = props.summary;
  const hosts = num(get(summary, "numEffectiveHosts")) ?? num(get(summary, "numHosts")) ?? 0;
  return { rules, hosts };
}

/** One rulesSpec entry: add or edit (mandatory, enabled) an anti-affinity rule, or remove it. */
export function ruleChange(
  operation: "add" | "edit" | "remove",
  rule: { key?: number; name: string; vms: string[] },
): Record<string, unknown> {
  if (operation === "remove")
    return { operation, removeKey: new TypedText("xsd:int", String(rule.key)) };
  return {
    operation,
    info: {
      _type: "ClusterAntiAffinityRuleSpec",
      ...(rule.key !== undefined ? { key: String(rule.key) } : {}),
      enabled: "true",
      name: rule.name,
      mandatory: "false",
      userCreated: "true",
      vm: rule.vms.map((v) => new MoRef("VirtualMachine", v)),
    },
  };
}

/** Starts ReconfigureComputeResource_Task with these rule changes; returns the task. */
export async function startRuleChange(
  session: VSphereSession,
  cluster: MoRef,
  change: Record<string, unknown>,
): Promise<string> {
  const task = moRef(
    await session.invoke("ReconfigureComputeResource_Task", cluster, {
      spec: { _type: "ClusterConfigSpecEx", rulesSpec: [change] },
      modify: "true",
    }),
  );
  if (!task) throw new Error("ReconfigureComputeResource_Task returned no task");
  return task.value;
}

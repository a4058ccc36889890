// placement.antiAffinity ByAppTypeAndEnvironment: servers sharing apptype and environment
// (web-prod-1, web-prod-2, ...) are kept on different hosts by one DRS VM anti-affinity rule per
// group, vsop-<apptype>-<environment> in the class's cluster. Each member's reconcile compares
// the rule with the group's VMs and starts the one change that makes them equal: created once
// two members have VMs, extended and shrunk as servers come and go, removed when fewer than two
// are left (vCenter keeps no one-VM rule); a deleted server leaves the rule before its VM is
// destroyed. The change is a cluster task: it is recorded per rule (not in a server's
// status.vm.task), never waited for, and re-read on a short recheck; the other members are woken
// when it is started and when it ended. Two steps share this module:
// - `affinity`, right after the VM step (the rule holds the VM before it is first powered on);
// - `affinity-report`, last: a group larger than the cluster's hosts (or a rule vCenter reports
//   out of compliance) is AntiAffinityUnsatisfiable on every member, without holding up install
//   or Puppet.
import type { VirtualServer, VirtualServerClass } from "../../api/types.js";
import { effectiveClass } from "../../api/effective-class.js";
import { StepError } from "../../errors.js";
import { VSphereTaskError } from "../../vsphere/errors.js";
import type { VCenter } from "../../vsphere/vcenter.js";
import {
  DONE,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { connectedVCenter, ownedVM } from "./vm-step.js";
import { recheckSeconds } from "../engine/vsphere-task.js";
import { vsphereStepError } from "../engine/vsphere-errors.js";
import { groupOf } from "../engine/server-index.js";

export type AffinityPort = Pick<
  VSpherePort,
  "synced" | "lastError" | "findByOwnerUID" | "taskState" | "track" | "inFlight" | "forget"
> &
  Pick<VCenter, "clusterRules" | "startAntiAffinityRule">;

export interface AffinityDeps {
  pool: { get(cls: VirtualServerClass): Promise<AffinityPort> };
  /** The servers whose hostname labels name this apptype and environment. */
  inGroup: (apptype: string, environment: string) => VirtualServer[];
  getClass: (name: string) => VirtualServerClass | undefined;
  /** Puts another server's key ("namespace/name") on the queue. */
  wake?: (key: string) => void;
}

const OPERATION = "AntiAffinityRule";

/** vsop-<apptype>-<environment>, the group's rule (vCenter allows 80 characters). */
export function ruleName(apptype: string, environment: string): string {
  return `vsop-${apptype}-${environment}`.slice(0, 80);
}

const keyOf = (vs: VirtualServer) => `${vs.metadata.namespace}/${vs.metadata.name}`;

/** The class's cluster, as a key: rules of different vCenters or clusters never mix. */
function clusterOf(cls: VirtualServerClass): string {
  const p = cls.spec.placement;
  return `${cls.spec.vcenter.url}|${p.datacenter}|${p.cluster ?? ""}`;
}

function groupsByAppTypeAndEnvironment(cls: VirtualServerClass | undefined): boolean {
  if (!cls) return false;
  try {
    return effectiveClass(cls).antiAffinity === "ByAppTypeAndEnvironment";
  } catch {
    return false;
  }
}

/**
 * The servers of this server's group: same apptype and environment (the labels vsop sets from
 * the hostname), a class that groups them in the same cluster, not being deleted.
 */
export function groupMembers(
  ctx: Pick<ReconcileContext, "vs" | "cls">,
  deps: Pick<AffinityDeps, "inGroup" | "getClass">,
): VirtualServer[] {
  const group = groupOf(ctx.vs);
  if (!group) return [];
  const cluster = clusterOf(ctx.cls);
  return deps.inGroup(group.apptype, group.environment).filter((s) => {
    if (s.metadata.deletionTimestamp) return false;
    const cls = deps.getClass(s.spec.className);
    return !!cls && groupsByAppTypeAndEnvironment(cls) && clusterOf(cls) === cluster;
  });
}

const sameSet = (a: string[], b: string[]) =>
  a.length === b.length && [...a].sort().join() === [...b].sort().join();

export function affinitySteps(deps: AffinityDeps) {
  /** What keeps each server's group from being kept apart (or its rule from changing), by UID. */
  const problems = new Map<string, StepError>();
  /**
   * Rules whose change is being sent right now: two members reconciled at once must not both
   * start one (a second add fails, a second edit is wasted); the other looks again shortly.
   */
  const sending = new Set<string>();

  /** The rule this server belongs in (or was in), and its group's VMs. */
  function target(ctx: ReconcileContext, vc: AffinityPort) {
    const group = groupOf(ctx.vs);
    const active = ctx.settings.antiAffinity === "ByAppTypeAndEnvironment";
    const name =
      active && group
        ? ruleName(group.apptype, group.environment)
        : ctx.status.vm?.antiAffinityRule;
    if (!name || !ctx.cls.spec.placement.cluster) return undefined;
    const members = active ? groupMembers(ctx, deps) : [];
    const vms: string[] = [];
    for (const s of members) {
      try {
        const vm = vc.findByOwnerUID(s.metadata.uid!);
        if (vm) vms.push(vm.moRef);
      } catch {
        // DuplicateOwnerMarker: that server's own reconcile reports it.
      }
    }
    return { name, members, vms: [...new Set(vms)].sort() };
  }

  /**
   * Brings the rule to the group's VMs: undefined when it holds them, else the wait while the
   * change runs. Reads how an earlier change ended first.
   */
  async function converge(
    ctx: ReconcileContext,
    vc: AffinityPort,
    deleting: boolean,
  ): Promise<StepOutcome | undefined> {
    const t = target(ctx, vc);
    if (!t) return undefined;
    const { cluster } = ctx.cls.spec.placement;
    const key = `rule:${clusterOf(ctx.cls)}|${t.name}`;
    const phase = deleting ? "Deleting" : "Configuring";
    if (sending.has(key)) {
      ctx.recheckAfterSeconds = Math.min(ctx.recheckAfterSeconds ?? Infinity, 1);
      return deleting
        ? wait(1, phase, "Deleting", `Changing anti-affinity rule ${t.name}.`)
        : undefined;
    }
    const running = vc.inFlight(key);
    if (running) {
      let state;
      try {
        state = await vc.taskState(running.moRef);
      } catch (err) {
        throw vsphereStepError(err);
      }
      if (state.state === "queued" || state.state === "running") {
        const message = `vCenter is changing anti-affinity rule ${t.name} (task ${running.moRef}).`;
        if (deleting) return wait(recheckSeconds(running.startedAt), phase, "Deleting", message);
        ctx.recheckAfterSeconds = Math.min(
          ctx.recheckAfterSeconds ?? Infinity,
          recheckSeconds(running.startedAt),
        );
        return undefined;
      }
      vc.forget(key, running.moRef);
      for (const s of t.members) if (s.metadata.uid !== ctx.vs.metadata.uid) deps.wake?.(keyOf(s));
      if (state.state === "error")
        throw vsphereStepError(
          new VSphereTaskError(running.moRef, state.fault, state.message, {
            method: "ReconfigureComputeResource_Task",
            entity: cluster,
          }),
        );
      ctx.log.info({ rule: t.name, task: running.moRef }, "anti-affinity rule changed");
    }

    sending.add(key);
    try {
      return await change(ctx, vc, t, key, deleting);
    } finally {
      sending.delete(key);
    }
  }

  /** Reads the rule and starts the change it needs (one at a time per rule, see `sending`). */
  async function change(
    ctx: ReconcileContext,
    vc: AffinityPort,
    t: NonNullable<ReturnType<typeof target>>,
    key: string,
    deleting: boolean,
  ): Promise<StepOutcome | undefined> {
    const { datacenter, cluster } = ctx.cls.spec.placement;
    const phase = deleting ? "Deleting" : "Configuring";
    let current;
    try {
      current = await vc.clusterRules(datacenter, cluster!);
    } catch (err) {
      throw vsphereStepError(err);
    }
    const rule = current.rules.find((r) => r.name === t.name);
    const want = t.vms.length >= 2 ? t.vms : [];
    const uid = ctx.vs.metadata.uid!;
    if (want.length > current.hosts || rule?.inCompliance === false)
      problems.set(
        uid,
        new StepError(
          "AntiAffinityUnsatisfiable",
          `Anti-affinity rule ${t.name} keeps ${want.length} VMs of ${t.members.length} servers apart, but ` +
            `cluster ${cluster} has ${current.hosts} host${current.hosts === 1 ? "" : "s"}` +
            (rule?.inCompliance === false ? " and vCenter reports the rule violated" : "") +
            "; DRS cannot place them on different hosts. Add hosts, or remove servers of the group.",
          { retryAfterSeconds: 60 },
        ),
      );
    else problems.delete(uid);
    let operation: "add" | "edit" | "remove" | undefined;
    if (want.length === 0) operation = rule ? "remove" : undefined;
    else if (!rule) operation = "add";
    else if (!sameSet(rule.vms, want) || !rule.enabled) operation = "edit";
    // A deleted server keeps the record (and so its finalizer step) until the rule let go of it.
    if (!deleting || !operation)
      ctx.status.vm = {
        ...ctx.status.vm,
        antiAffinityRule: !deleting && want.length ? t.name : undefined,
      };
    if (!operation) return undefined;
    let task;
    try {
      task = await vc.startAntiAffinityRule(datacenter, cluster!, operation, {
        key: rule?.key,
        name: t.name,
        vms: want,
      });
    } catch (err) {
      throw vsphereStepError(err);
    }
    vc.track({ operation: OPERATION, moRef: task, startedAt: new Date().toISOString() }, key);
    ctx.log.info({ rule: t.name, operation, vms: want, task }, "anti-affinity rule change started");
    for (const s of t.members) if (s.metadata.uid !== uid) deps.wake?.(keyOf(s));
    const message = `Changing anti-affinity rule ${t.name} (${operation}, ${want.length} VMs; task ${task}).`;
    if (deleting) return wait(1, phase, "Deleting", message);
    ctx.recheckAfterSeconds = Math.min(ctx.recheckAfterSeconds ?? Infinity, 1);
    return undefined;
  }

  const sync: Step = {
    name: "affinity",
    async run(ctx) {
      if (
        ctx.settings.antiAffinity !== "ByAppTypeAndEnvironment" &&
        !ctx.status.vm?.antiAffinityRule
      )
        return DONE;
      const vc = await connectedVCenter(deps.pool, ctx);
      if (!vc) return wait(2, "Configuring", "ConnectingToVCenter", "Connecting to vCenter.");
      if (!ownedVM(vc, ctx)) return DONE; // the VM step reports it
      try {
        await converge(ctx, vc, false);
      } catch (err) {
        // The rule's trouble is the group's, not this server's install: reported at the end.
        problems.set(ctx.vs.metadata.uid!, vsphereStepError(err));
      }
      return DONE;
    },
    async finalize(ctx) {
      problems.delete(ctx.vs.metadata.uid!);
      if (!ctx.status.vm?.antiAffinityRule) return DONE;
      const vc = await connectedVCenter(deps.pool, ctx);
      if (!vc) return wait(2, "Deleting", "ConnectingToVCenter", "Connecting to vCenter.");
      return (await converge(ctx, vc, true)) ?? DONE;
    },
  };

  const report: Step = {
    name: "affinity-report",
    run(ctx) {
      const err = problems.get(ctx.vs.metadata.uid!);
      return err ? Promise.reject(err) : Promise.resolve(DONE);
    },
  };

  return { sync, report };
}

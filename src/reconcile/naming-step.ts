// Step 1: the hostname follows the convention, nobody else claims it, it resolves, its address
// gives a VLAN and the VLAN's service names resolve. Nothing is created in vSphere before this holds.
import type { VirtualServer } from "../api/types.js";
import { effectiveNetwork } from "../api/defaults.js";
import { StepError } from "../errors.js";
import { parseHostname } from "../naming/hostname.js";
import type { Lookup } from "../naming/lookup.js";
import { resolveServer } from "../naming/resolve.js";
import { condition, DONE, type Step } from "./context.js";

export interface NamingDeps {
  lookup: (servers: string[]) => Lookup;
  /** All VirtualServers the operator knows, for the hostname uniqueness check. */
  allServers: () => VirtualServer[];
}

/**
 * Which of two objects holds a hostname: one that already resolved it (or has a VM) keeps it;
 * otherwise the older creationTimestamp, then the smaller UID (timestamps have 1s resolution).
 */
export function claimsBefore(a: VirtualServer, b: VirtualServer): boolean {
  const holds = (o: VirtualServer) =>
    !!o.status?.vm?.moRef ||
    !!o.status?.conditions?.some((c) => c.type === "NameResolved" && c.status === "True");
  if (holds(a) !== holds(b)) return holds(a);
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return ta < tb;
  return (a.metadata.uid ?? "") < (b.metadata.uid ?? "");
}

export function namingStep(deps: NamingDeps): Step {
  return {
    name: "naming",
    async run(ctx) {
      const { vs, cls } = ctx;
      ctx.parts = parseHostname(vs.spec.hostname, cls.spec.naming?.pattern);
      const rival = deps
        .allServers()
        .find(
          (o) =>
            o.metadata.uid !== vs.metadata.uid &&
            o.spec.hostname === vs.spec.hostname &&
            !o.metadata.deletionTimestamp &&
            claimsBefore(o, vs),
        );
      if (rival) {
        throw new StepError(
          "HostnameConflict",
          `Hostname ${vs.spec.hostname} is already claimed by VirtualServer ` +
            `${rival.metadata.namespace}/${rival.metadata.name}; pick another hostname or delete one of them.`,
          { condition: "NameResolved" },
        );
      }
      const resolved = await resolveServer(
        ctx.parts,
        effectiveNetwork(cls.spec),
        deps.lookup(cls.spec.naming?.dnsServers ?? []),
      );
      // One address, one server: the one that holds it (resolved first, or has a VM) keeps it.
      const holder = deps
        .allServers()
        .find(
          (o) =>
            o.metadata.uid !== vs.metadata.uid &&
            !o.metadata.deletionTimestamp &&
            o.status?.address === resolved.address &&
            claimsBefore(o, vs),
        );
      if (holder) {
        throw new StepError(
          "AddressConflict",
          `${vs.spec.hostname} resolves to ${resolved.address}, which VirtualServer ` +
            `${holder.metadata.namespace}/${holder.metadata.name} (${holder.spec.hostname}) already uses; ` +
            "fix the DNS record or delete one of them.",
          { condition: "NameResolved" },
        );
      }
      ctx.resolved = resolved;
      ctx.status.address = resolved.address;
      ctx.status.vlan = resolved.vlan;
      ctx.status.portGroup = resolved.portGroup;
      ctx.status.services = resolved.services;
      condition(
        ctx,
        "NameResolved",
        "True",
        "Resolved",
        `${resolved.address} (VLAN ${resolved.vlan}, port group ${resolved.portGroup})`,
      );
      return DONE;
    },
  };
}

// Step 1: the hostname follows the convention, nobody else claims it, it resolves, its address
// gives a VLAN and the VLAN's service names resolve. Nothing is created in vSphere before this holds.
import type { VirtualServer, VirtualServerStatus } from "../../api/types.js";
import { effectiveNetwork } from "../../api/defaults.js";
import { getCondition } from "../../controller/conditions.js";
import { StepError } from "../../errors.js";
import { parseHostname } from "../../naming/hostname.js";
import { DNSUnavailable, type Lookup } from "../../naming/lookup.js";
import { resolveServer, type ResolvedName } from "../../naming/resolve.js";
import { condition, DONE, type ReconcileContext, type Step } from "../engine/context.js";
import { resolveExtraNetworks, type ExtraNetwork } from "../../naming/extra-networks.js";
import type { ServerIndex } from "../engine/server-index.js";

/** How soon a server going on with its recorded resolution asks DNS again. */
export const RECHECK_SECONDS = 30;

export interface NamingDeps {
  lookup: (servers: string[]) => Lookup;
  /** The VirtualServers the operator knows, for the hostname and address uniqueness checks. */
  servers: Pick<ServerIndex, "withHostname" | "withAddress">;
}

/**
 * Which of two objects holds a hostname: one that already resolved it (or has a VM) keeps it;
 * otherwise the older creationTimestamp, then the smaller UID (timestamps have 1s resolution).
 */
export function claimsBefore(a: VirtualServer, b: VirtualServer): boolean {
  const holds = (o: VirtualServer) => {
    const c = getCondition(o.status?.conditions, "NameResolved");
    const standsIn = c?.reason === "DNSUnavailable" && !!o.status?.resolvedAt;
    return !!o.status?.vm?.moRef || c?.status === "True" || standsIn;
  };
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
      const rival = deps.servers
        .withHostname(vs.spec.hostname)
        .find(
          (o) =>
            o.metadata.uid !== vs.metadata.uid &&
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
      let resolved: ResolvedName;
      let outage: string | undefined;
      try {
        resolved = await resolveServer(
          ctx.parts,
          effectiveNetwork(cls.spec),
          deps.lookup(cls.spec.naming?.dnsServers ?? []),
        );
      } catch (err) {
        // An outage does not undo what DNS said before: the later steps go on with it. Any other
        // answer (the name is gone, its VLAN unknown) means the recorded one no longer stands.
        if (!(err instanceof DNSUnavailable)) ctx.status.resolvedAt = undefined;
        const recorded = err instanceof DNSUnavailable && recordedResolution(ctx.status);
        if (!recorded) throw err;
        resolved = recorded.resolved;
        ctx.status.resolvedAt = recorded.at;
        outage = `${err.message} Until it answers, vsop uses the address recorded at ${recorded.at}: ${describe(resolved)}.`;
      }
      // One address, one server: the one that holds it (resolved first, or has a VM) keeps it.
      const holder = deps.servers
        .withAddress(resolved.address)
        .find(
          (o) =>
            o.metadata.uid !== vs.metadata.uid &&
            !o.metadata.deletionTimestamp &&
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
      const extras = await extraNetworks(ctx, deps, !!outage);
      ctx.extraNetworks = extras.networks;
      outage ??= extras.outage;
      if (outage) {
        condition(ctx, "NameResolved", "Unknown", "DNSUnavailable", outage);
        ctx.recheckAfterSeconds = RECHECK_SECONDS;
        return DONE;
      }
      const s = ctx.status;
      if (
        !s.resolvedAt ||
        s.address !== resolved.address ||
        s.vlan !== resolved.vlan ||
        s.portGroup !== resolved.portGroup
      )
        s.resolvedAt = new Date().toISOString();
      ctx.status.address = resolved.address;
      ctx.status.vlan = resolved.vlan;
      ctx.status.portGroup = resolved.portGroup;
      ctx.status.services = resolved.services;
      condition(
        ctx,
        "NameResolved",
        "True",
        "Resolved",
        describe(resolved) +
          ctx.extraNetworks.map((e) => `; extra network ${e.hostname}: ${describe(e)}`).join(""),
      );
      return DONE;
    },
  };
}

/**
 * spec.extraNetworks resolved; during a DNS outage, the ones status.vm.nics recorded (all of them,
 * else the outage stops the step as it would without a recorded primary address).
 */
async function extraNetworks(
  ctx: ReconcileContext,
  deps: NamingDeps,
  primaryOutage: boolean,
): Promise<{ networks: ExtraNetwork[]; outage?: string }> {
  const hostnames = (ctx.vs.spec.extraNetworks ?? []).map((e) => e.hostname);
  if (!hostnames.length) return { networks: [] };
  try {
    const networks = await resolveExtraNetworks(
      hostnames,
      effectiveNetwork(ctx.cls.spec),
      deps.lookup(ctx.cls.spec.naming?.dnsServers ?? []),
    );
    return { networks };
  } catch (err) {
    if (!(err instanceof DNSUnavailable)) throw err;
    const recorded = (ctx.status.vm?.nics ?? []).filter((n) => n.role === "extra");
    const networks = hostnames.map((h) => {
      const n = recorded.find((r) => r.hostname === h);
      return n?.address && n.vlan !== undefined
        ? { hostname: h, address: n.address, vlan: n.vlan, portGroup: n.portGroup }
        : undefined;
    });
    if (networks.some((n) => !n)) throw err;
    return {
      networks: networks as ExtraNetwork[],
      outage: primaryOutage
        ? undefined
        : `${err.message} Until it answers, vsop uses the extra networks' addresses in status.vm.nics.`,
    };
  }
}

const describe = (r: Pick<ResolvedName, "address" | "vlan" | "portGroup">) =>
  `${r.address} (VLAN ${r.vlan}, port group ${r.portGroup})`;

/**
 * What DNS answered last, as status records it, and since when, if it still stands: NameResolved
 * is True, or already stands in during this outage (status.resolvedAt). A server whose name was
 * reported missing (NameNotResolvable) has nothing that stands: that cleared resolvedAt.
 */
export function recordedResolution(
  status: VirtualServerStatus,
): { resolved: ResolvedName; at: string } | undefined {
  const { address, vlan, portGroup, services } = status;
  const c = getCondition(status.conditions, "NameResolved");
  if (!address || vlan === undefined || !portGroup || !c) return undefined;
  if (!services?.dns || !services.ntp || !services.proxy) return undefined;
  // Status written before resolvedAt existed: the time NameResolved became True.
  const at =
    c.status === "True"
      ? (status.resolvedAt ?? c.lastTransitionTime)
      : c.reason === "DNSUnavailable"
        ? status.resolvedAt
        : undefined;
  if (!at) return undefined;
  const { dns, ntp, proxy } = services;
  return { resolved: { address, vlan, portGroup, services: { dns, ntp, proxy } }, at };
}

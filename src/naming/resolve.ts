// DNS: the server's A records (→ address and VLAN) and its per-VLAN service names.
import { StepError } from "../errors.js";
import type { EffectiveNetwork } from "../api/defaults.js";
import { deriveVLAN, fillVLAN } from "./vlan.js";
import type { HostnameParts } from "./hostname.js";
import type { Lookup } from "./lookup.js";

export interface ResolvedName {
  address: string;
  vlan: number;
  portGroup: string;
  services: Record<"dns" | "ntp" | "proxy", { name: string; address?: string }>;
}

/** A name's single address and the VLAN the class's rule gives it (the primary's and extras'). */
export async function resolveAddress(
  hostname: string,
  network: EffectiveNetwork,
  lookup: Lookup,
  what = "",
): Promise<{ address: string; vlan: number }> {
  const answer = await lookup(hostname);
  if (answer === "notfound" || answer.length === 0) {
    throw new StepError(
      "NameNotResolvable",
      `${what}${hostname} has no A record; register it in DNS first. vsop retries and goes on by itself.`,
      { condition: "NameResolved" },
    );
  }
  const addresses = [...answer].sort();
  const vlans = new Map(addresses.map((a) => [a, deriveVLAN(a, network)]));
  const distinct = new Set(vlans.values());
  if (distinct.size > 1) {
    throw new StepError(
      "AmbiguousAddress",
      `${what}${hostname} resolves to ${addresses.join(", ")} in different VLANs (${[...distinct].join(", ")}); ` +
        "keep one A record.",
      { condition: "NameResolved" },
    );
  }
  const address = addresses[0]!;
  return { address, vlan: vlans.get(address)! };
}

export async function resolveServer(
  parts: HostnameParts,
  network: EffectiveNetwork,
  lookup: Lookup,
): Promise<ResolvedName> {
  const { address, vlan } = await resolveAddress(parts.hostname, network, lookup);
  // The service names depend on the VLAN only: asked at once, so a silent DNS costs one timeout.
  const kinds = ["dns", "ntp", "proxy"] as const;
  const names = kinds.map((kind) => `${fillVLAN(network.services[kind], vlan)}.${parts.domain}`);
  const answers = await Promise.allSettled(names.map((name) => lookup(name)));
  const services = {} as ResolvedName["services"];
  for (const [i, kind] of kinds.entries()) {
    const name = names[i]!;
    const settled = answers[i]!;
    if (settled.status === "rejected") throw settled.reason;
    const found = settled.value;
    if (found === "notfound" || found.length === 0) {
      if (!network.optionalServices.has(kind)) {
        throw new StepError(
          "ServiceNameMissing",
          `The ${kind} service name ${name} for VLAN ${vlan} does not resolve; add it to DNS ` +
            `or list "${kind}" in the class's network.services.optional.`,
          { condition: "NameResolved" },
        );
      }
      services[kind] = { name };
    } else {
      services[kind] = { name, address: [...found].sort()[0]! };
    }
  }
  return { address, vlan, portGroup: fillVLAN(network.portGroupTemplate, vlan), services };
}

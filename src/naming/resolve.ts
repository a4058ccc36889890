// DNS: the server's A records (→ address and VLAN) and its per-VLAN service names.
import { promises as dns } from "node:dns";
import { StepError } from "../errors.js";
import type { EffectiveNetwork } from "../api/defaults.js";
import { deriveVLAN, fillVLAN } from "./vlan.js";
import type { HostnameParts } from "./hostname.js";

/** Answers that mean "no such record"; anything else means DNS itself failed. */
const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "NXDOMAIN", "NOTFOUND"]);

export type Lookup = (name: string) => Promise<string[] | "notfound">;

/** A resolver for the given servers (host or host:port), or the system's when empty. */
export function dnsLookup(servers: string[] = []): Lookup {
  const resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
  if (servers.length) resolver.setServers(servers);
  return async (name) => {
    try {
      return await resolver.resolve4(name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (NOT_FOUND.has(code)) return "notfound";
      throw new StepError(
        "DNSUnavailable",
        `DNS could not answer for ${name} (${code || (err as Error).message}); vsop retries.`,
        { condition: "NameResolved", status: "Unknown", cause: err },
      );
    }
  };
}

export interface ResolvedName {
  address: string;
  vlan: number;
  portGroup: string;
  services: Record<"dns" | "ntp" | "proxy", { name: string; address?: string }>;
}

export async function resolveServer(
  parts: HostnameParts,
  network: EffectiveNetwork,
  lookup: Lookup,
): Promise<ResolvedName> {
  const answer = await lookup(parts.hostname);
  if (answer === "notfound" || answer.length === 0) {
    throw new StepError(
      "NameNotResolvable",
      `${parts.hostname} has no A record; register it in DNS first. vsop retries and goes on by itself.`,
      { condition: "NameResolved" },
    );
  }
  const addresses = [...answer].sort();
  const vlans = new Map(addresses.map((a) => [a, deriveVLAN(a, network)]));
  const distinct = new Set(vlans.values());
  if (distinct.size > 1) {
    throw new StepError(
      "AmbiguousAddress",
      `${parts.hostname} resolves to ${addresses.join(", ")} in different VLANs (${[...distinct].join(", ")}); ` +
        "keep one A record.",
      { condition: "NameResolved" },
    );
  }
  const address = addresses[0]!;
  const vlan = vlans.get(address)!;
  const services = {} as ResolvedName["services"];
  for (const kind of ["dns", "ntp", "proxy"] as const) {
    const name = `${fillVLAN(network.services[kind], vlan)}.${parts.domain}`;
    const found = await lookup(name);
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

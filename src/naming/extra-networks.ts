// spec.extraNetworks: each extra hostname resolves like the server's own (one A record, the class's
// VLAN rule, the port group template) and gets one more service NIC on its VLAN's port group.
import type { EffectiveNetwork } from "../api/defaults.js";
import { fillVLAN } from "./vlan.js";
import { resolveAddress } from "./resolve.js";
import type { Lookup } from "./lookup.js";

export interface ExtraNetwork {
  hostname: string;
  address: string;
  vlan: number;
  portGroup: string;
}

/** The extra networks in spec order; the first name that does not resolve throws its StepError. */
export async function resolveExtraNetworks(
  hostnames: string[],
  network: EffectiveNetwork,
  lookup: Lookup,
): Promise<ExtraNetwork[]> {
  // Asked at once, so a silent DNS costs one timeout, not one per name.
  const settled = await Promise.allSettled(
    hostnames.map((h) => resolveAddress(h, network, lookup, "Extra network hostname ")),
  );
  return settled.map((s, i) => {
    if (s.status === "rejected") throw s.reason;
    const { address, vlan } = s.value;
    return {
      hostname: hostnames[i]!,
      address,
      vlan,
      portGroup: fillVLAN(network.portGroupTemplate, vlan),
    };
  });
}

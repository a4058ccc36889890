// Storage Policy Based Management (SPBM, the /pbm endpoint beside /sdk, same session): a storage
// policy by its name, and which datastores satisfy it. Policies are read, never created.
import type { VSphereSession } from "./session.js";
import { PBM_SERVICE } from "./soap.js";
import { MoRef, type Node } from "./xml.js";
import { get, items, moRef, str } from "./nodes.js";
import type { SpecObject } from "./vms.js";

const SERVICE_INSTANCE = new MoRef("PbmServiceInstance", "ServiceInstance");

/** vCenter has no storage (requirement) policy of that name. */
export class StoragePolicyNotFound extends Error {
  override name = "StoragePolicyNotFound";
  constructor(
    readonly policy: string,
    readonly known: string[],
  ) {
    super(`storage policy "${policy}" not found`);
  }
}

/** The policy exists, and the class's datastore does not satisfy it. */
export class StoragePolicyIncompatible extends Error {
  override name = "StoragePolicyIncompatible";
  constructor(
    readonly policy: string,
    readonly datastore: string,
  ) {
    super(`datastore ${datastore} does not satisfy storage policy "${policy}"`);
  }
}

export interface StoragePolicy {
  id: string;
  name: string;
}

type Invoke = Pick<VSphereSession, "invoke">;

const call = (s: Invoke, method: string, ref: MoRef, args: Record<string, unknown> = {}) =>
  s.invoke(method, ref, args, PBM_SERVICE);

async function content(s: Invoke): Promise<Node> {
  return call(s, "PbmRetrieveServiceContent", SERVICE_INSTANCE);
}

/** The storage requirement policies vCenter has (PbmQueryProfile, PbmRetrieveContent). */
export async function storagePolicies(s: Invoke): Promise<StoragePolicy[]> {
  const manager = moRef(get(await content(s), "profileManager"));
  if (!manager) throw new Error("SPBM returned no profile manager");
  const ids = items(
    await call(s, "PbmQueryProfile", manager, {
      resourceType: { resourceType: "STORAGE" },
      profileCategory: "REQUIREMENT",
    }),
  )
    .map((i) => str(get(i, "uniqueId")))
    .filter((i): i is string => !!i);
  if (!ids.length) return [];
  const profiles = items(
    await call(s, "PbmRetrieveContent", manager, {
      profileIds: ids.map((uniqueId) => ({ uniqueId })),
    }),
  );
  return profiles
    .map((p) => ({
      id: str(get(p, "profileId", "uniqueId")) ?? "",
      name: str(get(p, "name")) ?? "",
    }))
    .filter((p) => p.id && p.name);
}

/** The policy of that name; StoragePolicyNotFound (listing the known names) when there is none. */
export async function storagePolicyByName(s: Invoke, name: string): Promise<StoragePolicy> {
  const all = await storagePolicies(s);
  const found = all.find((p) => p.name === name);
  if (!found) throw new StoragePolicyNotFound(name, all.map((p) => p.name).sort());
  return found;
}

/** Which of the datastores (moRef values) satisfy the policy (PbmCheckCompatibility), in order. */
export async function compatibleDatastores(
  s: Invoke,
  policy: StoragePolicy,
  datastores: string[],
): Promise<string[]> {
  const solver = moRef(get(await content(s), "placementSolver"));
  if (!solver) throw new Error("SPBM returned no placement solver");
  const results = items(
    await call(s, "PbmCheckCompatibility", solver, {
      hubsToSearch: datastores.map((hubId) => ({ hubType: "Datastore", hubId })),
      profile: { uniqueId: policy.id },
    }),
  );
  const ok = new Set(
    results
      .filter((r) => items(get(r, "error")).length === 0)
      .map((r) => str(get(r, "hub", "hubId"))),
  );
  return datastores.filter((d) => ok.has(d));
}

/** The VirtualMachineProfileSpec that assigns the policy (config spec vmProfile, a disk's profile). */
export const profileSpec = (policy: StoragePolicy) => ({
  _type: "VirtualMachineDefinedProfileSpec",
  profileId: policy.id,
});

/** A CreateVM config spec with the policy on the VM's home and on every disk it creates. */
export function withStoragePolicy(config: SpecObject, policy: StoragePolicy): SpecObject {
  config.vmProfile = [profileSpec(policy)];
  for (const change of (config.deviceChange as SpecObject[] | undefined) ?? [])
    if (change.fileOperation === "create") change.profile = [profileSpec(policy)];
  return config;
}

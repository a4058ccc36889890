// Finding placement objects (datacenter, folder, cluster, resource pool, datastore, template)
// and port groups by inventory path, with a short-lived memo so steady reconciles cost nothing.
import type { VSphereSession } from "./session.js";
import { MoRef, text } from "./xml.js";
import { moRef, str } from "./nodes.js";
import { listObjects, retrieveOne } from "./properties.js";
import type { NetworkBacking } from "./devices.js";
import type { Placement } from "./vms.js";

export type PlacementPart =
  | "datacenter"
  | "cluster"
  | "resourcePool"
  | "datastore"
  | "datastoreCluster"
  | "folder"
  | "template";

/** A placement object does not exist. `objectName` is the name or path that was looked up. */
export class PlacementNotFound extends Error {
  override name = "PlacementNotFound";
  constructor(
    readonly what: PlacementPart,
    readonly objectName: string,
    readonly datacenter: string,
  ) {
    super(
      what === "datacenter"
        ? `datacenter "${objectName}" not found`
        : `${what} "${objectName}" not found in datacenter "${datacenter}"`,
    );
  }
}

export class PortGroupNotFound extends Error {
  override name = "PortGroupNotFound";
  constructor(
    readonly objectName: string,
    readonly datacenter: string,
  ) {
    super(`port group "${objectName}" not found in datacenter "${datacenter}"`);
  }
}

export interface ResolvedPlacement {
  datacenter: MoRef;
  folder: MoRef;
  pool: MoRef;
  datastore: MoRef;
  datastoreName: string;
}

const POOL_TYPES = new Set(["ResourcePool", "VirtualApp"]);
const CLUSTER_TYPES = new Set(["ClusterComputeResource", "ComputeResource"]);
const NETWORK_TYPES = new Set(["DistributedVirtualPortgroup", "Network"]);

function trimSlashes(p: string): string {
  return p.replace(/^\/+|\/+$/g, "");
}

/** Joins inventory path parts; parts may themselves be paths. */
export function inventoryPath(...parts: string[]): string {
  return parts.map(trimSlashes).filter(Boolean).join("/");
}

export class Inventory {
  private memo = new Map<string, { value: unknown; at: number }>();
  private readonly loading = new Map<string, Promise<unknown>>();
  /** Bumped by invalidate: a lookup begun before it may have read what is gone. */
  private generation = 0;

  constructor(
    private readonly session: VSphereSession,
    private readonly ttlMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Drops memoized lookups, e.g. after a placement object turned out to be gone. */
  invalidate(): void {
    this.memo.clear();
    this.loading.clear();
    this.generation++;
  }

  /**
   * Memoizes found values only: a missing object is looked up again next time. Lookups of one
   * key at once share one call: a burst of new servers on every worker asks vCenter once.
   */
  private cached<T>(key: string, load: () => Promise<T | undefined>): Promise<T | undefined> {
    const hit = this.memo.get(key);
    if (hit && this.now() - hit.at < this.ttlMs) return Promise.resolve(hit.value as T);
    const pending = this.loading.get(key);
    if (pending) return pending as Promise<T | undefined>;
    const generation = this.generation;
    const loaded = load()
      .then((value) => {
        // A lookup begun before an invalidate answers its callers but is not remembered.
        if (value !== undefined && generation === this.generation)
          this.memo.set(key, { value, at: this.now() });
        return value;
      })
      .finally(() => {
        if (this.loading.get(key) === loaded) this.loading.delete(key);
      });
    this.loading.set(key, loaded);
    return loaded;
  }

  /** SearchIndex.FindByInventoryPath, e.g. "DC0/host/DC0_C0". */
  find(path: string): Promise<MoRef | undefined> {
    return this.cached(`path:${path}`, async () => {
      const index = (await this.session.serviceContent()).searchIndex;
      if (!index) throw new Error("this vCenter has no SearchIndex");
      return moRef(
        await this.session.invoke("FindByInventoryPath", index, { inventoryPath: path }),
      );
    });
  }

  private async findTyped(path: string, types: Set<string>): Promise<MoRef | undefined> {
    const ref = await this.find(path);
    return ref && types.has(ref.type) ? ref : undefined;
  }

  /** An object of `type` named `name` anywhere under `container` (folders, clusters, pods). */
  private findByName(container: MoRef, type: string, name: string): Promise<MoRef | undefined> {
    return this.cached(`name:${container.value}:${type}:${name}`, async () => {
      const found = await listObjects(this.session, container, type, ["name"]);
      return found.find((o) => text(o.props.name) === name)?.obj;
    });
  }

  async datacenter(name: string): Promise<MoRef> {
    const dc = await this.findTyped(trimSlashes(name), new Set(["Datacenter"]));
    if (!dc) throw new PlacementNotFound("datacenter", name, name);
    return dc;
  }

  /** Resolves every part of a placement, or throws PlacementNotFound naming the missing one. */
  async placement(p: Placement): Promise<ResolvedPlacement> {
    const compute = await this.compute(p);
    const datastore = await this.datastore(trimSlashes(p.datacenter), p.datastore);
    if (!datastore) throw new PlacementNotFound("datastore", p.datastore, p.datacenter);
    return { ...compute, datastore, datastoreName: p.datastore.split("/").pop()! };
  }

  /** A datastore cluster (StoragePod) by path or name below the datastore folder. */
  async storagePod(datacenter: string, name: string): Promise<MoRef> {
    const dcPath = trimSlashes(datacenter);
    await this.datacenter(datacenter);
    const types = new Set(["StoragePod"]);
    let ref = await this.findTyped(inventoryPath(dcPath, "datastore", name), types);
    if (!ref && !name.includes("/")) {
      const folder = await this.find(inventoryPath(dcPath, "datastore"));
      ref = folder && (await this.findByName(folder, "StoragePod", name));
    }
    if (!ref) throw new PlacementNotFound("datastoreCluster", name, datacenter);
    return ref;
  }

  /** Datacenter, VM folder and resource pool of a placement (all but storage). */
  async compute(
    p: Omit<Placement, "datastore">,
  ): Promise<Omit<ResolvedPlacement, "datastore" | "datastoreName">> {
    const dcPath = trimSlashes(p.datacenter);
    const datacenter = await this.datacenter(p.datacenter);
    const missing = (what: PlacementPart, name: string) =>
      new PlacementNotFound(what, name, p.datacenter);

    const folder = await this.findTyped(
      inventoryPath(dcPath, "vm", p.folder ?? ""),
      new Set(["Folder"]),
    );
    if (!folder) throw missing("folder", p.folder ?? "vm");

    let cluster: MoRef | undefined;
    if (p.cluster) {
      cluster = await this.findTyped(inventoryPath(dcPath, "host", p.cluster), CLUSTER_TYPES);
      if (!cluster) throw missing("cluster", p.cluster);
    }

    let pool: MoRef | undefined;
    if (p.resourcePool) pool = await this.resourcePool(dcPath, p.resourcePool, p.cluster);
    else if (cluster) pool = await this.rootPool(cluster);
    if (!pool) throw missing("resourcePool", p.resourcePool ?? "(set cluster or resourcePool)");

    return { datacenter, folder, pool };
  }

  private rootPool(cluster: MoRef): Promise<MoRef | undefined> {
    return this.cached(`pool:${cluster.value}`, async () =>
      moRef((await retrieveOne(this.session, cluster, ["resourcePool"])).resourcePool),
    );
  }

  private async resourcePool(
    dcPath: string,
    pool: string,
    cluster: string | undefined,
  ): Promise<MoRef | undefined> {
    const candidates = [inventoryPath(dcPath, "host", pool)];
    if (cluster) candidates.push(inventoryPath(dcPath, "host", cluster, "Resources", pool));
    for (const path of candidates) {
      const ref = await this.findTyped(path, POOL_TYPES);
      if (ref) return ref;
    }
    if (pool.includes("/")) return undefined;
    const hostFolder = await this.find(inventoryPath(dcPath, "host"));
    return hostFolder && this.findByName(hostFolder, "ResourcePool", pool);
  }

  /** A datastore of the datacenter by name or path, or PlacementNotFound. */
  async datastoreIn(datacenter: string, name: string): Promise<MoRef> {
    await this.datacenter(datacenter);
    const ref = await this.datastore(trimSlashes(datacenter), name);
    if (!ref) throw new PlacementNotFound("datastore", name, datacenter);
    return ref;
  }

  private async datastore(dcPath: string, name: string): Promise<MoRef | undefined> {
    const types = new Set(["Datastore"]);
    const ref = await this.findTyped(inventoryPath(dcPath, "datastore", name), types);
    if (ref || name.includes("/")) return ref;
    const folder = await this.find(inventoryPath(dcPath, "datastore"));
    return folder && this.findByName(folder, "Datastore", name);
  }

  /** A cluster by path below the datacenter's host folder; PlacementNotFound when missing. */
  async cluster(datacenter: string, name: string): Promise<MoRef> {
    const ref = await this.findTyped(
      inventoryPath(trimSlashes(datacenter), "host", name),
      CLUSTER_TYPES,
    );
    if (!ref) throw new PlacementNotFound("cluster", name, datacenter);
    return ref;
  }

  /** A VM or template by path relative to the datacenter's vm folder. */
  vmByPath(datacenter: string, path: string): Promise<MoRef | undefined> {
    return this.findTyped(inventoryPath(datacenter, "vm", path), new Set(["VirtualMachine"]));
  }

  /** How a NIC attaches to the named port group or standard network of a datacenter. */
  async network(datacenter: string, name: string): Promise<NetworkBacking> {
    const dcPath = trimSlashes(datacenter);
    await this.datacenter(datacenter);
    let ref = await this.findTyped(inventoryPath(dcPath, "network", name), NETWORK_TYPES);
    if (!ref && !name.includes("/")) {
      const folder = await this.find(inventoryPath(dcPath, "network"));
      ref = folder && (await this.findByName(folder, "Network", name));
    }
    if (!ref) throw new PortGroupNotFound(name, datacenter);
    const short = name.split("/").pop()!;
    if (ref.type !== "DistributedVirtualPortgroup")
      return { kind: "standard", name: short, network: ref };
    const pg = ref;
    const backing = await this.cached(`dvpg:${pg.value}`, async () => {
      const props = await retrieveOne(this.session, pg, ["key", "config.distributedVirtualSwitch"]);
      const dvs = moRef(props["config.distributedVirtualSwitch"]);
      const key = str(props.key);
      if (!dvs || !key) return undefined;
      const switchUuid = await this.cached(`dvs:${dvs.value}`, async () =>
        str((await retrieveOne(this.session, dvs, ["uuid"])).uuid),
      );
      return switchUuid ? { portgroupKey: key, switchUuid } : undefined;
    });
    if (!backing) throw new PortGroupNotFound(name, datacenter);
    return { kind: "distributed", name: short, ...backing };
  }
}

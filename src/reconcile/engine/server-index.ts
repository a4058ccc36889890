// The VirtualServers the operator knows, by the fields reconciles look other servers up by: a
// hostname or an address held once, a class's servers (Puppet run and power-cycle slots, class
// edits) and an anti-affinity group. Each lookup reads one bucket of the cache, not all of it.
import type { VirtualServer } from "../../api/types.js";
import { CacheIndex } from "../../controller/cache-index.js";
import { keyOf, type Informer, type InformerHandler } from "../../controller/informer.js";
import { partLabel } from "../../naming/hostname.js";

const APPTYPE = partLabel("apptype");
const ENVIRONMENT = partLabel("environment");

/** The labels vsop sets from the hostname: the anti-affinity group. */
export function groupOf(vs: VirtualServer): { apptype: string; environment: string } | undefined {
  const labels = vs.metadata.labels ?? {};
  const apptype = labels[APPTYPE];
  const environment = labels[ENVIRONMENT];
  return apptype && environment ? { apptype, environment } : undefined;
}

const groupKey = (apptype: string, environment: string) => `${apptype}\n${environment}`;

export class ServerIndex {
  private readonly hostnames: CacheIndex<VirtualServer>;
  private readonly addresses: CacheIndex<VirtualServer>;
  private readonly classes: CacheIndex<VirtualServer>;
  private readonly groups: CacheIndex<VirtualServer>;

  constructor(source: Pick<Informer<VirtualServer>, "on" | "get">) {
    this.hostnames = new CacheIndex(source, (vs) => [vs.spec.hostname]);
    this.addresses = new CacheIndex(source, (vs) => [vs.status?.address]);
    this.classes = new CacheIndex(source, (vs) => [vs.spec.className]);
    this.groups = new CacheIndex(source, (vs) => {
      const g = groupOf(vs);
      return [g && groupKey(g.apptype, g.environment)];
    });
  }

  /** A fixed set of servers (tests, tools). */
  static of(servers: VirtualServer[]): ServerIndex {
    const byKey = new Map(servers.map((vs) => [keyOf(vs), vs]));
    return new ServerIndex({
      on: (handler: InformerHandler<VirtualServer>) => {
        for (const [key, vs] of byKey) handler("add", vs, undefined, key);
      },
      get: (key) => byKey.get(key),
    });
  }

  withHostname(hostname: string): VirtualServer[] {
    return this.hostnames.get(hostname);
  }

  withAddress(address: string): VirtualServer[] {
    return this.addresses.get(address);
  }

  ofClass(className: string): VirtualServer[] {
    return this.classes.get(className);
  }

  inGroup(apptype: string, environment: string): VirtualServer[] {
    return this.groups.get(groupKey(apptype, environment));
  }
}

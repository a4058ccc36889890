// A secondary index of an informer's cache, as client-go's Indexer: the keys of the cached
// objects by a value derived from each, kept in step with the cache through the informer's
// events (an update and a delete carry the object as it was filed). A reconcile that needs "the
// servers with this hostname" then reads one bucket instead of scanning every cached object,
// which made a full pass over N servers cost N².
//
// Lean, for 10,000 servers in the operator's memory budget: a value held by one object (a
// hostname, an address) is filed as that object's key alone; only shared values get a Set.
import { keyOf, type Informer, type InformerEvent, type KubeObject } from "./informer.js";

export class CacheIndex<T extends KubeObject> {
  private readonly buckets = new Map<string, string | Set<string>>();

  /**
   * @param values what an object is filed under (none, one or several; empty strings and
   *   undefined are not filed). A pure function of the object: an object is taken out of its
   *   buckets by computing them again from the version that was filed.
   */
  constructor(
    private readonly source: Pick<Informer<T>, "on" | "get">,
    private readonly values: (obj: T) => (string | undefined)[],
  ) {
    source.on((event: InformerEvent, obj: T, old?: T) => {
      if (old) this.file(old, false);
      else if (event === "delete") this.file(obj, false);
      if (event !== "delete") this.file(obj, true);
    });
  }

  /** The cached objects filed under `value`, in no particular order. */
  get(value: string): T[] {
    const bucket = this.buckets.get(value);
    if (bucket === undefined) return [];
    const keys = typeof bucket === "string" ? [bucket] : [...bucket];
    return keys.map((k) => this.source.get(k)).filter((o): o is T => o !== undefined);
  }

  private file(obj: T, add: boolean): void {
    const key = keyOf(obj);
    for (const v of new Set(this.values(obj))) {
      if (!v) continue;
      if (add) this.add(v, key);
      else this.remove(v, key);
    }
  }

  private add(value: string, key: string): void {
    const bucket = this.buckets.get(value);
    if (bucket === undefined) this.buckets.set(value, key);
    else if (typeof bucket !== "string") bucket.add(key);
    else if (bucket !== key) this.buckets.set(value, new Set([bucket, key]));
  }

  private remove(value: string, key: string): void {
    const bucket = this.buckets.get(value);
    if (bucket === key) this.buckets.delete(value);
    else if (typeof bucket === "object") {
      bucket.delete(key);
      if (bucket.size === 1) this.buckets.set(value, bucket.values().next().value!);
    }
  }
}

// A secondary index of an informer's cache, as client-go's Indexer: the keys of the cached
// objects by a value derived from each, kept in step with the cache through the informer's
// events (an update and a delete carry the object as it was filed). A reconcile that needs "the
// servers with this hostname" then reads one bucket instead of scanning every cached object,
// which made a full pass over N servers cost N².
//
// Lean, for 10,000 servers in the operator's memory budget: a value held by one object (a
// hostname, an address) is filed as that object's key alone; only shared values get a Set.
import type { Informer, KubeObject } from "./informer.js";

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
    source.on((event, obj, old, key) => {
      const before = old ?? (event === "delete" ? obj : undefined);
      const was = new Set(before ? this.values(before) : []);
      const is = new Set(event === "delete" ? [] : this.values(obj));
      // Only what changed is refiled: an unchanged value keeps the key it was filed with (the
      // informer's own string, not a copy).
      for (const v of was) if (v && !is.has(v)) this.remove(v, key);
      for (const v of is) if (v && !was.has(v)) this.add(v, key);
    });
  }

  /** The cached objects filed under `value`, in no particular order. */
  get(value: string): T[] {
    const bucket = this.buckets.get(value);
    if (bucket === undefined) return [];
    const keys = typeof bucket === "string" ? [bucket] : [...bucket];
    return keys.map((k) => this.source.get(k)).filter((o): o is T => o !== undefined);
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

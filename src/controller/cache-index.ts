// A secondary index of an informer's cache, as client-go's Indexer: the cached objects by a
// value derived from each, kept in step with the cache through the informer's events. A
// reconcile that needs "the servers with this hostname" then reads one bucket instead of
// scanning every cached object, which made a full pass over N servers cost N².
import { keyOf, type Informer, type InformerEvent, type KubeObject } from "./informer.js";

export class CacheIndex<T extends KubeObject> {
  private readonly buckets = new Map<string, Map<string, T>>();
  /** The values each object is filed under, to take it out again. */
  private readonly filed = new Map<string, string[]>();

  /**
   * @param values what an object is filed under (none, one or several; empty strings and
   *   undefined are not filed).
   */
  constructor(
    source: Pick<Informer<T>, "on">,
    private readonly values: (obj: T) => (string | undefined)[],
  ) {
    source.on((event: InformerEvent, obj: T) =>
      event === "delete" ? this.remove(keyOf(obj)) : this.put(obj),
    );
  }

  /** The cached objects filed under `value`, in no particular order. */
  get(value: string): T[] {
    const bucket = this.buckets.get(value);
    return bucket ? [...bucket.values()] : [];
  }

  private put(obj: T): void {
    const key = keyOf(obj);
    this.remove(key);
    const values = [...new Set(this.values(obj).filter((v): v is string => !!v))];
    for (const v of values) {
      let bucket = this.buckets.get(v);
      if (!bucket) this.buckets.set(v, (bucket = new Map()));
      bucket.set(key, obj);
    }
    if (values.length) this.filed.set(key, values);
  }

  private remove(key: string): void {
    for (const v of this.filed.get(key) ?? []) {
      const bucket = this.buckets.get(v);
      bucket?.delete(key);
      if (bucket?.size === 0) this.buckets.delete(v);
    }
    this.filed.delete(key);
  }
}

// List + watch into a cache. Keeps the resourceVersion of the last event, re-watches from it when
// a stream ends, and relists when the server says 410 Gone (or the watch keeps failing).
import type { Logger } from "pino";
import { Kube, isGone, type WatchEvent } from "./kube.js";

export interface KubeObject {
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
  };
}

export type InformerEvent = "add" | "update" | "delete";

export function keyOf(obj: KubeObject): string {
  return obj.metadata.namespace
    ? `${obj.metadata.namespace}/${obj.metadata.name}`
    : obj.metadata.name;
}

export interface InformerOptions {
  /** Collection path, e.g. /apis/provisioning.vsop.dev/v1alpha1/virtualservers */
  path: string;
  labelSelector?: string;
  logger: Logger;
  /** Upper bound of one watch request; the server ends it, we re-watch. */
  watchTimeoutSeconds?: number;
}

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private resourceVersion = "";
  private controller = new AbortController();
  private handlers: ((event: InformerEvent, obj: T, old?: T) => void)[] = [];
  private running: Promise<void> | undefined;
  private hasSynced = false;
  private syncWaiters: (() => void)[] = [];

  constructor(
    private readonly kube: Kube,
    private readonly opts: InformerOptions,
  ) {}

  on(handler: (event: InformerEvent, obj: T, old?: T) => void): void {
    this.handlers.push(handler);
  }

  get synced(): boolean {
    return this.hasSynced;
  }

  waitForSync(): Promise<void> {
    return this.hasSynced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.running;
  }

  private emit(event: InformerEvent, obj: T, old?: T): void {
    for (const h of this.handlers) h(event, obj, old);
  }

  private query(): Record<string, string> {
    return this.opts.labelSelector ? { labelSelector: this.opts.labelSelector } : {};
  }

  /** Lists everything and replaces the cache, emitting the differences. */
  private async relist(): Promise<void> {
    const list = await this.kube.request<{ items: T[]; metadata: { resourceVersion: string } }>(
      "GET",
      this.opts.path,
      undefined,
      { params: this.query() },
    );
    const seen = new Set<string>();
    for (const item of list.items) {
      const key = keyOf(item);
      seen.add(key);
      const old = this.cache.get(key);
      this.cache.set(key, item);
      if (!old) this.emit("add", item);
      else if (old.metadata.resourceVersion !== item.metadata.resourceVersion)
        this.emit("update", item, old);
    }
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.emit("delete", old);
      }
    }
    this.resourceVersion = list.metadata.resourceVersion;
    if (!this.hasSynced) {
      this.hasSynced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private apply(e: WatchEvent<T>): void {
    if (e.type === "ERROR") {
      const status = e.object as unknown as { code?: number; message?: string };
      if (status.code === 410) throw new GoneError(status.message ?? "too old resource version");
      throw new Error(`watch error: ${status.message ?? JSON.stringify(status)}`);
    }
    const obj = e.object;
    if (obj.metadata.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
    if (e.type === "BOOKMARK") return;
    const key = keyOf(obj);
    const old = this.cache.get(key);
    if (e.type === "DELETED") {
      this.cache.delete(key);
      this.emit("delete", obj);
    } else {
      this.cache.set(key, obj);
      this.emit(old ? "update" : "add", obj, old);
    }
  }

  private async loop(): Promise<void> {
    const signal = this.controller.signal;
    let needList = true;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (needList) {
          await this.relist();
          needList = false;
        }
        await this.kube.watch<T>(
          this.opts.path,
          {
            ...this.query(),
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: "true",
            timeoutSeconds: String(this.opts.watchTimeoutSeconds ?? 300),
          },
          (e) => this.apply(e),
          signal,
        );
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        needList = err instanceof GoneError || isGone(err) || failures > 2;
        const delay = Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
        this.opts.logger.warn(
          { path: this.opts.path, err, relist: needList, delayMs: delay },
          "watch interrupted",
        );
        await sleep(delay, signal);
      }
    }
  }
}

class GoneError extends Error {}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

// API-server helpers of `make bench`: a concurrency limit, creating N VirtualServers quickly
// (direct POSTs, not kubectl apply: its per-object GET would count against vsop's time), and a
// watch that notes when each server first reports VMCreated and Ready (a kubectl poll would
// cost a process per look and add its latency to every figure).
import { Kube, isGone } from "../src/controller/kube.js";
import { loadClusterAccess } from "../src/controller/kubeconfig.js";
import { API_VERSION, VS_PLURAL, type VirtualServer } from "../src/api/types.js";
import { stackEnv } from "../test/support/env.js";

export const serversPath = (ns: string) => `/apis/${API_VERSION}/namespaces/${ns}/${VS_PLURAL}`;

/** A client as the stack's admin (the floor writes as vsop's ServiceAccount, see bench-floor). */
export async function adminKube(): Promise<Kube> {
  return new Kube(await loadClusterAccess(stackEnv("KUBECONFIG")));
}

/** Runs at most `n` of the returned function's calls at once. */
export function limit(n: number): <T>(job: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (job) => {
    if (running >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await job();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** Creates the objects, 16 at a time; returns them as the API server stored them. */
export async function createServers(
  kube: Kube,
  ns: string,
  objects: object[],
): Promise<VirtualServer[]> {
  const run = limit(16);
  return Promise.all(objects.map((o) => run(() => kube.create<VirtualServer>(serversPath(ns), o))));
}

const isTrue = (vs: VirtualServer, type: string) =>
  vs.status?.conditions?.some((c) => c.type === type && c.status === "True") ?? false;

/** When each server of a namespace first had VMCreated=True and Ready=True (Date.now()). */
export class Progress {
  readonly created = new Map<string, number>();
  readonly ready = new Map<string, number>();
  private readonly stopper = new AbortController();
  private done: Promise<void> | undefined;

  constructor(
    private readonly kube: Kube,
    private readonly ns: string,
  ) {}

  /** Lists, then watches until stop(); resolves once the first list is in. */
  async start(): Promise<void> {
    let rv = await this.relist();
    const signal = this.stopper.signal;
    this.done = (async () => {
      while (!signal.aborted) {
        try {
          if (!rv) rv = await this.relist();
          await this.kube.watch<VirtualServer>(
            serversPath(this.ns),
            { resourceVersion: rv, allowWatchBookmarks: "true" },
            (e) => {
              if (e.type === "ERROR") return void (rv = "");
              rv = e.object.metadata.resourceVersion ?? rv;
              if (e.type === "ADDED" || e.type === "MODIFIED") this.observe(e.object);
            },
            signal,
          );
        } catch (err) {
          if (signal.aborted) break;
          if (isGone(err)) rv = "";
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    })();
  }

  private async relist(): Promise<string> {
    const list = await this.kube.get<{
      metadata: { resourceVersion: string };
      items: VirtualServer[];
    }>(serversPath(this.ns));
    for (const vs of list.items) this.observe(vs);
    return list.metadata.resourceVersion;
  }

  private observe(vs: VirtualServer): void {
    const name = vs.metadata.name;
    const now = Date.now();
    if (!this.created.has(name) && isTrue(vs, "VMCreated")) this.created.set(name, now);
    if (!this.ready.has(name) && isTrue(vs, "Ready")) this.ready.set(name, now);
  }

  /** How many of `names` have reached the condition, and when the last of them did. */
  count(which: "created" | "ready", names: Iterable<string>): { count: number; last: number } {
    const seen = which === "created" ? this.created : this.ready;
    let count = 0;
    let last = 0;
    for (const n of names) {
      const t = seen.get(n);
      if (t === undefined) continue;
      count++;
      last = Math.max(last, t);
    }
    return { count, last };
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await this.done;
  }
}

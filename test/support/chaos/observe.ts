// What the campaign sees of its servers, read as the stack's admin (not through the operators'
// proxies): a list every 250 ms, which workflow stages are in flight (to aim the kills), which
// servers report an error, and when the last one moved forward.
import { setTimeout as sleep } from "node:timers/promises";
import type { Kube } from "../../../src/controller/kube.js";
import { PROGRESS_REASONS } from "../../../src/reconcile/engine/virtualserver.js";
import type { VS } from "../harness.js";

export type Stage = "create" | "upload" | "handoff" | "puppet" | "finalizer";

interface Status {
  phase?: string;
  vm?: { moRef?: string; task?: { operation?: string } };
  install?: { iso?: string; startedAt?: string; completedAt?: string };
  puppet?: { requestedAt?: string; finishedFor?: string };
}

const HANDOFF_TASKS = new Set(["DisconnectBootNIC", "DetachISO", "DeleteISO", "ClearGuestinfo"]);
const PHASE_RANK: Record<string, number> = {
  Pending: 0,
  Creating: 1,
  Installing: 2,
  Configuring: 3,
  Ready: 4,
};

/** The workflow stages a server is in the middle of. */
export function stagesOf(vs: VS): Stage[] {
  const meta = vs.metadata;
  if (meta.deletionTimestamp) return meta.finalizers?.length ? ["finalizer"] : [];
  const s = (vs.status ?? {}) as Status;
  const task = s.vm?.task?.operation ?? "";
  const out: Stage[] = [];
  if (task === "CreateVM" || task === "FinishVM" || (!s.vm?.moRef && s.phase === "Creating"))
    out.push("create");
  if (s.install?.iso && !s.install.startedAt && task !== "AttachISO") out.push("upload");
  if (s.install?.completedAt && (HANDOFF_TASKS.has(task) || !s.puppet?.requestedAt))
    out.push("handoff");
  if (s.puppet?.requestedAt && s.puppet.finishedFor !== s.puppet.requestedAt) out.push("puppet");
  return out;
}

export const readyOf = (vs: VS) =>
  vs.status?.conditions?.find((c) => c.type === "Ready" && c.status === "True") !== undefined;

/** The Ready reason when it says something is wrong (not "in progress"). */
export function errorOf(vs: VS): string | undefined {
  if (vs.metadata.deletionTimestamp) return undefined;
  const c = vs.status?.conditions?.find((x) => x.type === "Ready");
  if (!c || c.status === "True" || PROGRESS_REASONS.has(c.reason)) return undefined;
  return c.reason;
}

export class Observer {
  servers: VS[] = [];
  /** Date.now() of the last time a server reached a later phase (or Ready). */
  lastProgressAt = 0;
  /** Each time a server began to show an error reason (for the outages' figures). */
  readonly errorsSeen: { at: number; name: string; reason: string }[] = [];
  private readonly rank = new Map<string, number>();
  private readonly shown = new Map<string, string | undefined>();
  private readonly stopped = new AbortController();
  private loop: Promise<void> | undefined;
  listFailures = 0;

  constructor(
    private readonly kube: Kube,
    private readonly path: string,
  ) {}

  async start(): Promise<void> {
    await this.poll();
    this.loop = (async () => {
      while (!this.stopped.signal.aborted) {
        await sleep(250);
        await this.poll().catch(() => this.listFailures++);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await this.loop;
  }

  /** Whether any server is in the middle of `stage` now. */
  inFlight(stage: Stage): boolean {
    return this.servers.some((vs) => stagesOf(vs).includes(stage));
  }

  stagesNow(): Stage[] {
    return [...new Set(this.servers.flatMap(stagesOf))].sort();
  }

  erroring(): VS[] {
    return this.servers.filter((vs) => errorOf(vs) !== undefined);
  }

  private async poll(): Promise<void> {
    const list = await this.kube.get<{ items: VS[] }>(this.path);
    const now = Date.now();
    for (const vs of list.items) {
      const uid = vs.metadata.uid;
      const r = readyOf(vs) ? PHASE_RANK.Ready! : (PHASE_RANK[vs.status?.phase ?? ""] ?? 0);
      if (r > (this.rank.get(uid) ?? 0)) this.lastProgressAt = now;
      this.rank.set(uid, Math.max(r, this.rank.get(uid) ?? 0));
      const reason = errorOf(vs);
      if (reason && this.shown.get(uid) !== reason)
        this.errorsSeen.push({ at: now, name: vs.metadata.name, reason });
      this.shown.set(uid, reason);
    }
    this.servers = list.items;
  }
}

// Kubernetes Events about VirtualServers. The reconciler records one per transition (a condition's
// reason changed), never one per retry; a repeat of the same event within a minute is dropped.
// As client-go's broadcaster, recording never waits for the API server: the event is queued and
// written in the background, so a worker spends no time on it. The queue is bounded; beyond it,
// new events are dropped and counted (status and the log still say what happened).
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Kube } from "./kube.js";
import type { ObjectMeta } from "../api/types.js";
import { scrub } from "../observability/redact.js";
import { outsideReconcile } from "../abort.js";

export interface Involved {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export interface RecorderOptions {
  /** Events waiting to be written; more are dropped. */
  maxPending?: number;
  /** Event writes in flight at once. */
  writers?: number;
  /** Called for each event dropped because the queue was full. */
  onDrop?: () => void;
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();
  private readonly pending: { ns: string; body: object; reason: string }[] = [];
  private writing = 0;
  private readonly idle: (() => void)[] = [];
  private readonly maxPending: number;
  private readonly writers: number;

  constructor(
    private readonly kube: Kube,
    private readonly logger: Logger,
    private readonly instance: string,
    private readonly opts: RecorderOptions = {},
  ) {
    this.maxPending = opts.maxPending ?? 1000;
    this.writers = opts.writers ?? 2;
  }

  /** Queues the event; it is written in the background (see flush). */
  record(obj: Involved, type: "Normal" | "Warning", reason: string, text: string): void {
    const message = scrub(text);
    const ns = obj.metadata.namespace ?? "default";
    const dedupe = `${obj.metadata.uid}/${type}/${reason}/${message}`;
    const last = this.recent.get(dedupe);
    if (last && Date.now() - last < 60_000) return;
    this.recent.set(dedupe, Date.now());
    if (this.recent.size > 10_000) this.recent.clear();
    if (this.pending.length >= this.maxPending) {
      this.opts.onDrop?.();
      return;
    }
    const now = new Date().toISOString();
    this.pending.push({
      ns,
      reason,
      body: {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${obj.metadata.name}.${randomBytes(8).toString("hex")}`, namespace: ns },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.metadata.name,
          namespace: ns,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        type,
        reason,
        message,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
        source: { component: "vsop" },
        reportingComponent: "vsop",
        reportingInstance: this.instance,
      },
    });
    this.pump();
  }

  /** Resolves when every queued event is written (or failed), or after `timeoutMs`. */
  async flush(timeoutMs: number): Promise<void> {
    if (this.writing === 0 && this.pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.idle.push(resolve)),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  private pump(): void {
    while (this.writing < this.writers && this.pending.length) {
      const e = this.pending.shift()!;
      this.writing++;
      // Not part of the reconcile that recorded it: its deadline must not cancel the write.
      void outsideReconcile(() => this.write(e)).finally(() => {
        this.writing--;
        this.pump();
        if (this.writing === 0 && this.pending.length === 0)
          for (const resolve of this.idle.splice(0)) resolve();
      });
    }
  }

  private async write(e: { ns: string; body: object; reason: string }): Promise<void> {
    try {
      await this.kube.create(`/api/v1/namespaces/${e.ns}/events`, e.body);
    } catch (err) {
      // An event that cannot be written must not fail the reconcile.
      this.logger.warn({ err, reason: e.reason }, "could not record event");
    }
  }
}

// Kubernetes Events about VirtualServers. The reconciler records one per transition (a condition's
// reason changed), never one per retry; a repeat of the same event within a minute is dropped.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Kube } from "./kube.js";
import type { ObjectMeta } from "../api/types.js";
import { scrub } from "../observability/redact.js";

export interface Involved {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly kube: Kube,
    private readonly logger: Logger,
    private readonly instance: string,
  ) {}

  async record(obj: Involved, type: "Normal" | "Warning", reason: string, text: string) {
    const message = scrub(text);
    const ns = obj.metadata.namespace ?? "default";
    const dedupe = `${obj.metadata.uid}/${type}/${reason}/${message}`;
    const last = this.recent.get(dedupe);
    if (last && Date.now() - last < 60_000) return;
    this.recent.set(dedupe, Date.now());
    if (this.recent.size > 10_000) this.recent.clear();
    const now = new Date().toISOString();
    try {
      await this.kube.create(`/api/v1/namespaces/${ns}/events`, {
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
      });
    } catch (err) {
      // An event that cannot be written must not fail the reconcile.
      this.logger.warn({ err, reason }, "could not record event");
    }
  }
}

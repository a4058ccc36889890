// Reconcile steps without a cluster: a context for one server and a node answering Puppet.
import { pino } from "pino";
import type {
  VirtualServer,
  VirtualServerClass,
  VirtualServerStatus,
} from "../../src/api/types.js";
import { effectiveClass } from "../../src/api/effective-class.js";
import type { LastRunSummary } from "../../src/mcollective/puppet.js";
import type { ReconcileContext } from "../../src/reconcile/context.js";
import type { McoPool } from "../../src/reconcile/mco-pool.js";

/** web-prod-1.example.test of class c, with the given status and class spec. */
export function stepContext(
  status: VirtualServerStatus,
  classSpec: Record<string, unknown> = {},
): ReconcileContext {
  const cls = { metadata: { name: "c" }, spec: classSpec } as unknown as VirtualServerClass;
  return {
    vs: {
      metadata: { name: "w", namespace: "n", uid: "u" },
      spec: { hostname: "web-prod-1.example.test", className: "c" },
    } as VirtualServer,
    cls,
    settings: effectiveClass(cls),
    status,
    log: pino({ level: "silent" }),
  } as ReconcileContext;
}

/** A server whose Puppet run was requested at requestedAt, and a node whose summary is `summary`. */
export function puppetPoll(requestedAt: string, summary: Partial<LastRunSummary>) {
  const node = {
    lastRunSummary: async (): Promise<LastRunSummary> =>
      ({ totalResources: 3, changedResources: 1, ...summary }) as LastRunSummary,
  };
  const pool = { get: async () => ({ puppet: node }) } as unknown as McoPool;
  const ctx = stepContext({ puppet: { requestedAt, environment: "production", tags: "" } });
  return { ctx, pool };
}

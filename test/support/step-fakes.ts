// Reconcile steps without a cluster: a context for one server and a node answering Puppet.
import { pino } from "pino";
import type {
  VirtualServer,
  VirtualServerClass,
  VirtualServerStatus,
} from "../../src/api/types.js";
import { effectiveClass } from "../../src/api/effective-class.js";
import type { LastRunSummary } from "../../src/mcollective/puppet.js";
import type { ReconcileContext } from "../../src/reconcile/engine/context.js";
import { PendingCalls } from "../../src/reconcile/engine/pending-calls.js";
import type { McoPort, PuppetPort } from "../../src/reconcile/engine/ports.js";

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

/**
 * A server whose Puppet run was requested at requestedAt, a node whose summary is `summary`, and
 * the table of calls in flight (the step's first reconcile starts the call, a later one takes it).
 */
export function puppetPoll(requestedAt: string, summary: Partial<LastRunSummary>) {
  const node = {
    timeoutMs: 10_000,
    lastRunSummary: async (): Promise<LastRunSummary> =>
      ({
        totalResources: 3,
        changedResources: 1,
        failedResourceNames: [],
        reportTime: null,
        ...summary,
      }) as LastRunSummary,
  };
  const pool = { get: async () => ({ puppet: node }) } as unknown as McoPort;
  const calls = new PendingCalls({ wake: () => undefined });
  const ctx = stepContext({ puppet: { requestedAt, environment: "production", tags: "" } });
  return { ctx, pool, calls };
}

/** Lets settled calls store their outcome (their callbacks run). */
export const callbacks = () => new Promise((resolve) => setImmediate(resolve));

type Action = "runonce" | "lastRunSummary" | "status";

/** One call the fake node received; the test answers it. */
export interface NodeCall {
  action: Action;
  args: unknown[];
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/** A node whose Puppet calls wait until the test answers them (`received`, oldest first). */
export function fakeNode(timeoutMs = 10_000) {
  const received: NodeCall[] = [];
  const call =
    (action: Action) =>
    (...args: unknown[]) =>
      new Promise<never>((resolve, reject) =>
        received.push({
          action,
          args,
          resolve: resolve as (v: unknown) => void,
          reject,
        }),
      );
  const puppet = {
    timeoutMs,
    runonce: call("runonce"),
    lastRunSummary: call("lastRunSummary"),
    status: call("status"),
  } as PuppetPort;
  const pool: McoPort = { get: async () => ({ puppet }) };
  return { pool, received };
}

// Step 6: Puppet applied through MCollective. A run is requested (runonce) when none has been
// applied yet, when spec.puppet changed, when the puppet-run-requested-at annotation asks for one
// (once per value), or when the class's interval is due; then the step polls
// last_run_summary until a run newer than the request has finished. The request time lives in
// status, so a restarted operator (or a reconnected broker) waits for that run, never a second one.
// No reconcile waits for a node: each MCollective call is started in the background
// (pending-calls.ts) and the reconcile returns; the reply, or the call's timeout, wakes the key,
// and the next reconcile takes the outcome and goes on as if it had waited for it.
import { puppetEnvironment } from "../api/defaults.js";
import {
  PUPPET_RUN_REQUESTED_AT,
  type VirtualServer,
  type VirtualServerStatus,
} from "../api/types.js";
import { parseDuration } from "../cli/run-flags.js";
import { StepError } from "../errors.js";
import { McoConnectionError, McoTimeout, McoTLSError } from "../mcollective/errors.js";
import { McoIdentityError } from "../mcollective/identity.js";
import {
  PuppetBusyError,
  PuppetDisabledError,
  type LastRunSummary,
} from "../mcollective/puppet.js";
import { keyOf } from "../controller/informer.js";
import {
  condition,
  DONE,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "./context.js";
import type { PendingCalls } from "./pending-calls.js";
import type { McoPort } from "./ports.js";

const seconds = (iso: string | undefined) => (iso ? Date.parse(iso) / 1000 : 0);
type PuppetStatus = NonNullable<VirtualServerStatus["puppet"]>;

/**
 * Seconds before the retry of a call that failed `failures` times in a row, for the failures
 * without a pace of their own: 1 s doubling up to 5 min, as the work queue's default backoff
 * (which the reconcile that starts a call resets, since it returns a wait, not an error).
 */
export const retryBackoff = (failures: number) => Math.min(300, 2 ** Math.max(0, failures - 1));

function mcoError(err: unknown, identity: string, failures: number): StepError {
  if (err instanceof StepError) return err;
  const retryAfterSeconds = retryBackoff(failures);
  if (err instanceof McoTimeout)
    return new StepError(
      "NodeNotReachable",
      `${identity} did not answer through MCollective; check that its mcollectived runs and reaches the broker. vsop retries.`,
      { condition: "PuppetApplied", status: "Unknown", cause: err, retryAfterSeconds },
    );
  if (err instanceof McoTLSError)
    return new StepError(
      "BrokerTLSError",
      `TLS to the MCollective broker failed: ${err.message}. vsop tries again every minute.`,
      { condition: "PuppetApplied", status: "False", cause: err, retryAfterSeconds: 60 },
    );
  if (err instanceof McoConnectionError)
    return new StepError(
      "BrokerUnreachable",
      `The MCollective broker cannot be reached (${err.message}); vsop reconnects with backoff.`,
      { condition: "PuppetApplied", status: "Unknown", cause: err, retryAfterSeconds },
    );
  if (err instanceof McoIdentityError)
    return new StepError(
      "NodeIdentityUnverified",
      `${err.message}; vsop ignores it. If ${identity} was reinstalled outside vsop, rebuild it so it gets a new identity key.`,
      { condition: "PuppetApplied", status: "Unknown", cause: err, retryAfterSeconds: 30 },
    );
  if (err instanceof PuppetDisabledError)
    return new StepError(
      "PuppetDisabled",
      `Puppet is disabled on ${identity} (${err.message}); enable it (vsop mco puppet … or puppet agent --enable).`,
      { condition: "PuppetApplied", cause: err, retryAfterSeconds: 30 },
    );
  return new StepError(
    "MCollectiveError",
    `MCollective request to ${identity} failed: ${(err as Error).message}.`,
    { condition: "PuppetApplied", cause: err, retryAfterSeconds },
  );
}

/** The puppet-run-requested-at annotation's value, as written (undefined when absent). */
const runRequest = (vs: VirtualServer) => vs.metadata.annotations?.[PUPPET_RUN_REQUESTED_AT];

/**
 * Whether the annotation asks for a run: a parsable time, not the value already honoured, and
 * newer than the last request (node clock) or than the last honoured value (client clock, so a
 * node clock ahead of the client's does not swallow every request after the first).
 */
export function runRequested(vs: VirtualServer, p: PuppetStatus): boolean {
  const value = runRequest(vs);
  if (!value || value === p.requestedFor) return false;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return false;
  const newer = (iso: string | undefined) => iso !== undefined && at > Date.parse(iso);
  return newer(p.requestedAt) || newer(p.requestedFor);
}

/** Whether a run should be requested now, and why. */
export function runDue(ctx: ReconcileContext, now = Date.now()): string | undefined {
  const p = ctx.status.puppet ?? {};
  if (!p.requestedAt) return "first run";
  const env = puppetEnvironment(ctx.vs, ctx.cls.spec);
  const tags = (ctx.vs.spec.puppet?.tags ?? []).join(",");
  if (p.environment !== env || (p.tags ?? "") !== tags) return "spec.puppet changed";
  if (runRequested(ctx.vs, p)) return "requested";
  const interval = ctx.cls.spec.puppet?.interval;
  if (
    interval &&
    p.lastRunAt &&
    now - Date.parse(p.lastRunAt) > parseDuration(interval, "puppet.interval") * 1000
  )
    return "interval due";
  return undefined;
}

/**
 * The identity public key vsop recorded for the server when it fetched its install keys;
 * undefined for a server that never did (an image that needs no install, an adopted VM), whose
 * replies are then believed on the shared MCollective server key alone.
 */
export type IdentityKeyOf = (ctx: ReconcileContext) => Promise<string | undefined>;

/** Called once per run vsop requested, when it finished: seconds since the request; failed? */
export type OnPuppetRun = (seconds: number, failed: boolean) => void;

/** What a runonce asked for, kept with its reply: status records the run as it was requested. */
interface RunRequest {
  /** When the node started the run (epoch seconds; the reply's arrival when it did not say). */
  initiatedAt: number;
  environment: string;
  tags: string[];
  requestedFor?: string;
  reason: string;
}

/** Call ids in the pending-call table. */
const RUNONCE = "puppet#runonce";
const SUMMARY = "puppet#last_run_summary";
const STATUS = "puppet#status";

/** Reasons of a failed call (mcoError), which stay on show while its retry is in flight. */
const CALL_FAILURES = new Set([
  "NodeNotReachable",
  "BrokerTLSError",
  "BrokerUnreachable",
  "NodeIdentityUnverified",
  "PuppetDisabled",
  "MCollectiveError",
]);

/**
 * The wait while a call is in flight. After a failed call the failure stays as it is until the
 * retry answers, so status does not flap (a write and Events) on every retry of a silent node.
 */
function inFlight(ctx: ReconcileContext, seconds: number, message: string): StepOutcome {
  const ready = ctx.status.conditions?.find((c) => c.type === "Ready");
  if (ready?.status === "False" && CALL_FAILURES.has(ready.reason) && ctx.status.phase)
    return wait(seconds, ctx.status.phase, ready.reason, ready.message);
  return wait(seconds, "Configuring", "PuppetRunning", message);
}

const tableFull = (identity: string) =>
  wait(
    5,
    "Configuring",
    "PuppetRunning",
    `vsop has too many MCollective requests in flight; it asks ${identity} in a moment.`,
  );

export function puppetStep(
  pool: McoPort,
  calls: PendingCalls,
  identityKeyOf: IdentityKeyOf,
  onRun?: OnPuppetRun,
): Step {
  return {
    name: "puppet",
    async run(ctx) {
      const identity = ctx.vs.spec.hostname;
      const key = keyOf(ctx.vs);
      const { puppet } = await pool.get(ctx.cls);
      // The requeue should the wake not come: after the call's own timeout, which wakes the key.
      const fallback = Math.ceil(puppet.timeoutMs / 1000) + 5;
      const p = ctx.status.puppet ?? {};
      if (!p.requestedAt || runFinished(p)) {
        const request = calls.take<RunRequest>(key, RUNONCE);
        if (request.state === "pending")
          return inFlight(ctx, fallback, `Asking ${identity} to run Puppet.`);
        if (request.state === "settled") {
          if (request.ok) return requested(ctx, p, request.value);
          if (request.error instanceof PuppetBusyError)
            return wait(
              5,
              "Configuring",
              "PuppetRunning",
              `A Puppet run is already in progress on ${identity}; waiting for it.`,
            );
          throw mcoError(request.error, identity, request.failures);
        }
        const reason = runDue(ctx);
        if (!reason) return outcome(ctx);
        const identityKey = await identityKeyOf(ctx);
        const environment = puppetEnvironment(ctx.vs, ctx.cls.spec);
        const tags = ctx.vs.spec.puppet?.tags ?? [];
        const requestedFor = runRequest(ctx.vs);
        const started = calls.start(key, RUNONCE, async (): Promise<RunRequest> => {
          const r = await puppet.runonce(identity, { environment, tags }, identityKey);
          const initiatedAt = r.initiatedAt || Date.now() / 1000;
          return { initiatedAt, environment, tags, requestedFor, reason };
        });
        if (!started) return tableFull(identity);
        return inFlight(ctx, fallback, `Asking ${identity} to run Puppet (${reason}).`);
      }

      const poll = calls.take<LastRunSummary>(key, SUMMARY);
      if (poll.state === "none") {
        const identityKey = await identityKeyOf(ctx);
        if (!calls.start(key, SUMMARY, () => puppet.lastRunSummary(identity, identityKey)))
          return tableFull(identity);
      }
      if (poll.state !== "settled")
        return inFlight(ctx, fallback, `Puppet is running on ${identity}.`);
      if (!poll.ok) throw mcoError(poll.error, identity, poll.failures);
      const summary = poll.value;
      // Not yet: the summary is older than the request, or is still the run before it (one
      // requested in the second the previous run finished has the same whole-second time).
      if (
        summary.lastrun < seconds(p.requestedAt) ||
        (p.lastRunAt !== undefined && summary.lastrun <= seconds(p.lastRunAt))
      ) {
        const timeout = parseDuration(
          ctx.cls.spec.puppet?.runTimeout ?? "30m",
          "puppet.runTimeout",
        );
        if (Date.now() / 1000 - seconds(p.requestedAt) > timeout)
          throw new StepError(
            "PuppetRunTimedOut",
            `No Puppet run on ${identity} finished within ${ctx.cls.spec.puppet?.runTimeout ?? "30m"} of the request; check the node's Puppet log.`,
            { condition: "PuppetApplied", retryAfterSeconds: 60 },
          );
        // The next reconcile asks again.
        return wait(3, "Configuring", "PuppetRunning", `Puppet is running on ${identity}.`);
      }
      ctx.status.puppet = {
        ...p,
        finishedFor: p.requestedAt,
        lastRunAt: new Date(summary.lastrun * 1000).toISOString(),
        changed: summary.changedResources,
        failed: summary.failedResources,
        total: summary.totalResources,
        configVersion: summary.configVersion ?? undefined,
      };
      ctx.log.info(
        { changed: summary.changedResources, failed: summary.failedResources },
        "puppet run finished",
      );
      onRun?.(Math.max(0, summary.lastrun - seconds(p.requestedAt)), summary.failedResources !== 0);
      return outcome(ctx);
    },
  };
}

/** The node accepted the run: recorded in status, then its summary is polled. */
function requested(ctx: ReconcileContext, p: PuppetStatus, r: RunRequest): StepOutcome {
  const { environment, tags, requestedFor, reason } = r;
  ctx.status.puppet = {
    ...p,
    requestedAt: new Date(r.initiatedAt * 1000).toISOString(),
    environment,
    tags: tags.join(","),
    // Whatever the reason, this run is newer than the annotation's value (when it was asked).
    ...(requestedFor ? { requestedFor } : {}),
  };
  ctx.log.info({ reason, environment }, "puppet run requested");
  condition(
    ctx,
    "PuppetApplied",
    p.lastRunAt ? "True" : "False",
    "PuppetRunning",
    `Puppet run requested (${reason}).`,
  );
  return wait(3, "Configuring", "PuppetRunning", `Puppet is running on ${ctx.vs.spec.hostname}.`);
}

/** Whether the requested run has finished (statuses from before finishedFor: by the times). */
function runFinished(p: NonNullable<ReconcileContext["status"]["puppet"]>): boolean {
  if (p.finishedFor !== undefined) return p.finishedFor === p.requestedAt;
  return !!p.lastRunAt && seconds(p.lastRunAt) >= seconds(p.requestedAt);
}

/** The condition from the last finished run. */
function outcome(ctx: ReconcileContext) {
  const identity = ctx.vs.spec.hostname;
  const r = ctx.status.puppet!;
  const counts =
    `${r.changed} changed, ${r.failed} failed of ${r.total} resources` +
    (r.configVersion ? `, config version ${r.configVersion}` : "");
  // A summary that does not count failures (no failed_resources: a run that died before
  // reporting, a foreign agent) proves nothing: it is not a success.
  if (r.failed === undefined || r.failed < 0) {
    throw new StepError(
      "PuppetReportIncomplete",
      `The last Puppet run summary of ${identity} does not say how many resources failed; check Puppet on the server (puppet config print lastrunfile), then re-run it with kubectl vsop puppet run.`,
      { condition: "PuppetApplied", retryAfterSeconds: 300 },
    );
  }
  if (r.failed > 0) {
    throw new StepError(
      "PuppetRunFailed",
      `The Puppet run on ${identity} failed: ${counts}. Fix the catalog, then re-run it with kubectl vsop puppet run (or change spec.puppet).`,
      {
        condition: "PuppetApplied",
        retryAfterSeconds: 300,
      },
    );
  }
  condition(ctx, "PuppetApplied", "True", "Applied", `Puppet applied: ${counts}.`);
  return DONE;
}

/**
 * The "installed" signal through MCollective: the server answers puppet#status signed with its
 * own identity key. A plain ping would not do: any server holding the shared key can answer
 * as any other, and a false "installed" cuts the boot NIC mid-install. Returns at once: true
 * when a verified reply has come, false while none has (a check is started when none is in
 * flight; its reply or timeout wakes the key).
 */
export function mcoDiscovery(pool: McoPort, calls: PendingCalls, identityKeyOf: IdentityKeyOf) {
  return async (ctx: ReconcileContext): Promise<boolean> => {
    const identityKey = await identityKeyOf(ctx);
    if (!identityKey) return false;
    const key = keyOf(ctx.vs);
    const check = calls.take<unknown>(key, STATUS);
    if (check.state === "settled") {
      if (check.ok) return true;
      if (check.error instanceof McoIdentityError)
        ctx.log.warn(
          { err: check.error },
          "a reply to the install check was not signed by the server's key",
        );
      return false; // the next check asks again
    }
    if (check.state === "none") {
      const { puppet } = await pool.get(ctx.cls);
      calls.start(key, STATUS, () => puppet.status(ctx.vs.spec.hostname, identityKey));
    }
    return false;
  };
}

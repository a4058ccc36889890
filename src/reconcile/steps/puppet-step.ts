// Step 6: Puppet applied through MCollective. A run is requested (runonce) when none has been
// applied yet, when spec.puppet changed, when the puppet-run-requested-at annotation asks for one
// (once per value), or when the class's interval (plus the server's splay) is due; then the step
// polls last_run_summary until a run newer than the request has finished. At most the class's
// maxConcurrentRuns runs are in flight at once (puppet-runs.ts's RunSlots).
// A run is first written down as an intent (status.puppet.pendingRun), and the runonce is sent
// only once that write went through: a process killed after sending leaves the intent behind, and
// the next one asks the node whether that run happened (puppet#status) before it sends anything.
// The request time then lives in status, so a restart (or a reconnected broker) waits for that
// run, never a second one.
// No reconcile waits for a node: each MCollective call is started in the background
// (pending-calls.ts) and the reconcile returns; the reply, or the call's timeout, wakes the key,
// and the next reconcile takes the outcome and goes on as if it had waited for it.
import { puppetEnvironment } from "../../api/defaults.js";
import {
  PUPPET_RUN_REQUESTED_AT,
  type PuppetRunIntent,
  type VirtualServer,
  type VirtualServerStatus,
} from "../../api/types.js";
import { StepError } from "../../errors.js";
import {
  McoConnectionError,
  McoRpcError,
  McoTimeout,
  McoTLSError,
} from "../../mcollective/errors.js";
import { McoIdentityError } from "../../mcollective/identity.js";
import {
  PuppetBusyError,
  PuppetDisabledError,
  PuppetReplyIncomplete,
  type LastRunSummary,
  type PuppetStatus as NodeStatus,
  type RunOnceResult,
} from "../../mcollective/puppet.js";
import { recoverRun, RunSlots, splayOffsetSeconds } from "./puppet-runs.js";
import { keyOf } from "../../controller/informer.js";
import {
  condition,
  DONE,
  intentWritten,
  wait,
  type ReconcileContext,
  type Step,
  type StepOutcome,
} from "../engine/context.js";
import type { PendingCalls } from "../engine/pending-calls.js";
import type { McoPort } from "../engine/ports.js";

const seconds = (iso: string | undefined) => (iso ? Date.parse(iso) / 1000 : 0);
type PuppetStatus = NonNullable<VirtualServerStatus["puppet"]>;

function mcoError(err: unknown, identity: string, retryAfterSeconds: number): StepError {
  if (err instanceof StepError) return err;
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
  if (err instanceof PuppetReplyIncomplete)
    return new StepError(
      "PuppetReportIncomplete",
      `${err.message}, so vsop cannot tell what the run did; check that ${identity} runs vsop's puppet agent plugin (mcollective/agent/puppet.rb) and that Puppet writes its summary (puppet config print lastrunfile). vsop asks again.`,
      {
        condition: "PuppetApplied",
        cause: err,
        retryAfterSeconds: Math.max(30, retryAfterSeconds),
      },
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
  if (
    p.environment !== env ||
    (p.tags ?? "") !== tags ||
    (p.noop ?? false) !== (ctx.vs.spec.puppet?.noop ?? false)
  )
    return "spec.puppet changed";
  if (runRequested(ctx.vs, p)) return "requested";
  const due = periodicRunDue(ctx);
  if (due !== undefined && now >= due) return "interval due";
  return undefined;
}

/**
 * When the periodic run is due (epoch ms): the class's interval after the last run, plus the
 * server's own offset within the class's splay; undefined without an interval or a last run.
 */
export function periodicRunDue(ctx: ReconcileContext): number | undefined {
  const { intervalSeconds, splaySeconds } = ctx.settings.puppet;
  const last = ctx.status.puppet?.lastRunAt;
  if (!intervalSeconds || !last) return undefined;
  const splay = splayOffsetSeconds(ctx.vs.metadata.uid ?? ctx.vs.metadata.name, splaySeconds);
  return Date.parse(last) + (intervalSeconds + splay) * 1000;
}

/**
 * The identity public key vsop recorded for the server when it fetched its install keys;
 * undefined for a server that never did (an image that needs no install, an adopted VM), whose
 * replies are then believed on the shared MCollective server key alone.
 */
export type IdentityKeyOf = (ctx: ReconcileContext) => Promise<string | undefined>;

/** Called once per run vsop requested, when it finished: seconds since the request; failed? */
export type OnPuppetRun = (seconds: number, failed: boolean) => void;

/** Call ids in the pending-call table. */
const RUNONCE = "puppet#runonce";
const SUMMARY = "puppet#last_run_summary";
/** How long after its summary a run may still be sending its report and hold its slot. */
const REPORT_GRACE_SECONDS = 60;
const STATUS = "puppet#status";
/** puppet#status asked to find out whether the run of an intent found on restart happened. */
const RECOVER = "puppet#status/recover";

/** A node's status with the moment its reply arrived (vsop's clock), to read the node's clock. */
type Received = NodeStatus & { receivedAt: number };

/** Reasons of a failed call (mcoError), which stay on show while its retry is in flight. */
const CALL_FAILURES = new Set([
  "NodeNotReachable",
  "BrokerTLSError",
  "BrokerUnreachable",
  "NodeIdentityUnverified",
  "PuppetDisabled",
  "MCollectiveError",
  "PuppetReportIncomplete",
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

const queued = (ctx: ReconcileContext, held: number) =>
  wait(
    10,
    "Configuring",
    "PuppetRunQueued",
    `${held} Puppet runs of class ${ctx.cls.metadata.name} are in flight (puppet.maxConcurrentRuns ${ctx.settings.puppet.maxConcurrentRuns}); ${ctx.vs.spec.hostname} runs when one has finished.`,
  );

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
  slots: RunSlots = new RunSlots({ wake: () => undefined }),
): Step {
  /**
   * Intents this process wrote and has not sent, by key (their startedAt). Status showing one of
   * these means its write went through, so it is sent; an intent not in here was written by a
   * process that may have sent it, so the node is asked first.
   */
  const unsent = new Map<string, string>();
  /** Intents (startedAt by key) whose node answered the probe: not probed again while queued. */
  const probed = new Map<string, string>();

  return {
    name: "puppet",
    async run(ctx) {
      const identity = ctx.vs.spec.hostname;
      const key = keyOf(ctx.vs);
      const { puppet } = await pool.get(ctx.cls);
      // The requeue should the wake not come: after the call's own timeout, which wakes the key.
      const fallback = Math.ceil(puppet.timeoutMs / 1000) + 5;
      const group = ctx.cls.metadata.name;
      const { maxConcurrentRuns, runTimeout } = ctx.settings.puppet;
      const ttlMs = (runTimeout.seconds + fallback) * 1000;
      const p = ctx.status.puppet ?? {};

      /** Sends the intent's runonce, when a slot is free. */
      const send = async (intent: PuppetRunIntent): Promise<StepOutcome> => {
        unsent.set(key, intent.startedAt);
        if (!slots.acquire(group, key, maxConcurrentRuns, ttlMs))
          return queued(ctx, slots.held(group));
        const identityKey = await identityKeyOf(ctx);
        const options = {
          environment: intent.environment,
          tags: intent.tags ? intent.tags.split(",") : [],
          noop: intent.noop ?? false,
        };
        const started = calls.start(key, RUNONCE, () =>
          puppet.runonce(identity, options, identityKey),
        );
        if (!started) return tableFull(identity);
        unsent.delete(key);
        probed.delete(key);
        ctx.log.info({ reason: intent.reason, noop: options.noop }, "puppet runonce sent");
        return inFlight(ctx, fallback, `Asking ${identity} to run Puppet (${intent.reason}).`);
      };

      /**
       * An intent written by an earlier process (or sent without an answer): ask the node first.
       * Also the first run of a node vsop has never heard from (`probe`): a node that does not
       * answer must not hold one of the class's run slots for a whole request timeout.
       */
      const recover = async (intent: PuppetRunIntent, probe = false): Promise<StepOutcome> => {
        const check = calls.take<Received>(key, RECOVER);
        if (check.state === "none") {
          const identityKey = await identityKeyOf(ctx);
          const started = calls.start(key, RECOVER, async () => ({
            ...(await puppet.status(identity, identityKey)),
            receivedAt: Date.now(),
          }));
          if (!started) return tableFull(identity);
        }
        if (check.state !== "settled")
          return inFlight(
            ctx,
            fallback,
            probe
              ? `Checking that ${identity} answers through MCollective before asking it to run Puppet (${intent.reason}).`
              : `Checking whether ${identity} already started the Puppet run vsop asked for (${intent.reason}).`,
          );
        if (!check.ok)
          throw mcoError(check.error, identity, calls.retryAfterSeconds(check.failures));
        const node = check.value;
        if (probe) probed.set(key, intent.startedAt);
        const found = recoverRun(Date.parse(intent.startedAt), node, node.receivedAt, p.lastRunAt);
        if (!found.ran) {
          if (!probe)
            ctx.log.info(
              { reason: intent.reason },
              "the asked-for puppet run did not reach the node",
            );
          return send(intent);
        }
        slots.hold(group, key, ttlMs);
        ctx.log.info(
          { reason: intent.reason, applying: found.applying },
          "the asked-for puppet run reached the node before the restart; not sent again",
        );
        return requested(ctx, p, intent, found.requestedAt);
      };

      if (p.pendingRun) {
        const intent = p.pendingRun;
        const request = calls.take<RunOnceResult>(key, RUNONCE);
        if (request.state === "pending")
          return inFlight(ctx, fallback, `Asking ${identity} to run Puppet (${intent.reason}).`);
        if (request.state === "settled") {
          if (request.ok) return requested(ctx, p, intent, request.value.initiatedAt);
          // The node refused it, so nothing started: it is sent again.
          if (request.error instanceof PuppetBusyError) {
            unsent.set(key, intent.startedAt);
            return wait(
              5,
              "Configuring",
              "PuppetRunning",
              `A Puppet run is already in progress on ${identity}; waiting for it.`,
            );
          }
          slots.release(key);
          if (request.error instanceof McoRpcError) unsent.set(key, intent.startedAt);
          // No answer, or one vsop cannot believe or use: the run may have started, so the node
          // is asked before anything is sent again.
          else unsent.delete(key);
          throw mcoError(request.error, identity, calls.retryAfterSeconds(request.failures));
        }
        if (unsent.get(key) !== intent.startedAt) return recover(intent);
        const answered = slots.holds(group, key) || probed.get(key) === intent.startedAt;
        return answered ? send(intent) : recover(intent, true);
      }

      if (!p.requestedAt || runFinished(p)) {
        slots.release(key);
        const reason = runDue(ctx);
        if (!reason) {
          const due = periodicRunDue(ctx);
          if (due !== undefined) {
            const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
            ctx.recheckAfterSeconds = Math.min(ctx.recheckAfterSeconds ?? Infinity, seconds);
          }
          return outcome(ctx);
        }
        // While the class's run slots are scarce, a node that never answered a run request gets
        // one only once it answers a probe (puppet#status), so that nodes that do not answer
        // cannot hold them all for a request timeout each.
        const held = slots.held(group);
        const probeFirst =
          !p.requestedAt && held >= maxConcurrentRuns / 2 && held < maxConcurrentRuns;
        if (!probeFirst && !slots.acquire(group, key, maxConcurrentRuns, ttlMs))
          return queued(ctx, slots.held(group));
        const requestedFor = runRequest(ctx.vs);
        const intent: PuppetRunIntent = {
          startedAt: new Date().toISOString(),
          reason,
          environment: puppetEnvironment(ctx.vs, ctx.cls.spec),
          tags: (ctx.vs.spec.puppet?.tags ?? []).join(","),
          ...(ctx.vs.spec.puppet?.noop ? { noop: true } : {}),
          ...(requestedFor ? { requestedFor } : {}),
        };
        // Written first; the next pass sends it once status shows it (the write went through),
        // at once and in this worker (intentWritten).
        ctx.status.puppet = { ...p, pendingRun: intent };
        unsent.set(key, intent.startedAt);
        ctx.log.info({ reason }, "puppet run decided; recording it before asking the node");
        return intentWritten(
          "Configuring",
          "PuppetRunning",
          `Asking ${identity} to run Puppet (${reason}).`,
        );
      }

      // A run is in flight: it holds a slot (also one that a process before this one started),
      // until it is overdue: a run that never reports must not hold one for good.
      const overdue = Date.now() / 1000 - seconds(p.requestedAt) > runTimeout.seconds;
      if (overdue) slots.release(key);
      else slots.hold(group, key, ttlMs);
      const poll = calls.take<LastRunSummary>(key, SUMMARY);
      if (poll.state === "none") {
        const identityKey = await identityKeyOf(ctx);
        if (!calls.start(key, SUMMARY, () => puppet.lastRunSummary(identity, identityKey)))
          return tableFull(identity);
      }
      if (poll.state !== "settled")
        return inFlight(ctx, fallback, `Puppet is running on ${identity}.`);
      if (!poll.ok) throw mcoError(poll.error, identity, calls.retryAfterSeconds(poll.failures));
      const summary = poll.value;
      // Not yet: the summary is older than the request, or is still the run before it (one
      // requested in the second the previous run finished has the same whole-second time).
      if (
        summary.lastrun < seconds(p.requestedAt) ||
        (p.lastRunAt !== undefined && summary.lastrun <= seconds(p.lastRunAt))
      ) {
        if (overdue)
          throw new StepError(
            "PuppetRunTimedOut",
            `No Puppet run on ${identity} finished within ${runTimeout.text} of the request; check the node's Puppet log.`,
            { condition: "PuppetApplied", retryAfterSeconds: 60 },
          );
        // The next reconcile asks again.
        return wait(3, "Configuring", "PuppetRunning", `Puppet is running on ${identity}.`);
      }
      // Puppet writes its summary before it sends its report to the master and exits: the slot
      // (a share of the master) is held until the run's process is gone, within a bound.
      if (
        summary.applying &&
        Date.now() / 1000 - summary.lastrun < REPORT_GRACE_SECONDS &&
        !overdue
      )
        return wait(
          1,
          "Configuring",
          "PuppetRunning",
          `Puppet is sending its report on ${identity}.`,
        );
      slots.release(key);
      const failed = summary.failedResources > 0;
      const rest = { ...p };
      delete rest.failedResources;
      delete rest.reportTime;
      ctx.status.puppet = {
        ...rest,
        finishedFor: p.requestedAt,
        lastRunAt: new Date(summary.lastrun * 1000).toISOString(),
        changed: summary.changedResources,
        failed: summary.failedResources,
        outOfSync: summary.outOfSyncResources,
        total: summary.totalResources,
        configVersion: summary.configVersion ?? undefined,
        ...(failed && summary.failedResourceNames.length
          ? { failedResources: summary.failedResourceNames }
          : {}),
        ...(failed && summary.reportTime ? { reportTime: reportTime(summary.reportTime) } : {}),
      };
      ctx.log.info(
        {
          changed: summary.changedResources,
          failed: summary.failedResources,
          outOfSync: summary.outOfSyncResources,
          noop: p.noop ?? false,
        },
        "puppet run finished",
      );
      onRun?.(Math.max(0, summary.lastrun - seconds(p.requestedAt)), summary.failedResources !== 0);
      return outcome(ctx);
    },
  };
}

/** The report's time as RFC 3339 (status field format), or as the node wrote it if unparsable. */
function reportTime(value: string): string {
  const at = Date.parse(value);
  return Number.isNaN(at) ? value : new Date(at).toISOString();
}

/** The node accepted the run (or had it already): recorded in status, its summary polled next. */
function requested(
  ctx: ReconcileContext,
  p: PuppetStatus,
  intent: PuppetRunIntent,
  initiatedAt: number,
): StepOutcome {
  const { environment, tags, requestedFor, reason, noop } = intent;
  const rest = { ...p };
  delete rest.pendingRun;
  delete rest.noop;
  ctx.status.puppet = {
    ...rest,
    requestedAt: new Date(initiatedAt * 1000).toISOString(),
    environment,
    tags,
    ...(noop ? { noop } : {}),
    // Whatever the reason, this run is newer than the annotation's value (when it was asked).
    ...(requestedFor ? { requestedFor } : {}),
  };
  ctx.log.info({ reason, environment, noop: noop ?? false }, "puppet run requested");
  condition(
    ctx,
    "PuppetApplied",
    p.lastRunAt ? "True" : "False",
    "PuppetRunning",
    `Puppet run requested (${reason}${noop ? ", noop" : ""}).`,
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
    const first = r.failedResources?.[0];
    const at = r.reportTime ?? r.lastRunAt;
    throw new StepError(
      "PuppetRunFailed",
      `The Puppet run on ${identity}${at ? ` at ${at}` : ""} failed: ${counts}` +
        (first ? `; first failed resource ${first}` : "") +
        `. Fix the catalog, then re-run it with kubectl vsop puppet run (or change spec.puppet).`,
      {
        condition: "PuppetApplied",
        retryAfterSeconds: 300,
      },
    );
  }
  if (r.noop) {
    const would = r.outOfSync ?? 0;
    condition(
      ctx,
      "PuppetApplied",
      "True",
      "Noop",
      `Puppet ran in noop mode (spec.puppet.noop) and changed nothing: ${would} of ${r.total} resources would change` +
        (r.configVersion ? `, config version ${r.configVersion}` : "") +
        ".",
    );
    return DONE;
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

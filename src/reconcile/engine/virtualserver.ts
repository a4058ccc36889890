// The VirtualServer reconciler: runs the ordered steps, turns their outcome into conditions, phase
// and Events, and writes status only when it changed.
import type { Logger } from "pino";
import {
  API_VERSION,
  FINALIZER,
  GROUP,
  VERSION,
  VS_PLURAL,
  type Condition,
  type Phase,
  type VirtualServer,
  type VirtualServerClass,
  type VirtualServerStatus,
} from "../../api/types.js";
import type { Result } from "../../controller/controller.js";
import type { EventRecorder } from "../../controller/events.js";
import { jsonEqual } from "../../controller/json-equal.js";
import { isConflict, isNotFound, type Kube } from "../../controller/kube.js";
import { throwIfAborted } from "../../abort.js";
import { effectiveClass, InvalidClassField } from "../../api/effective-class.js";
import { StepError } from "../../errors.js";
import { classify } from "./classify.js";
import { partLabels, parseHostname } from "../../naming/hostname.js";
import { LIST_SHARD_LABEL, listShardOf } from "../../api/list-shards.js";
import { condition, type ReconcileContext, type Step, type StepOutcome } from "./context.js";
import { rebuildEvents, rebuilding } from "../steps/rebuild-step.js";

export interface ReconcilerDeps {
  kube: Kube;
  recorder: EventRecorder;
  logger: Logger;
  getServer: (key: string) => VirtualServer | undefined;
  getClass: (name: string) => VirtualServerClass | undefined;
  steps: Step[];
  /** Reports each step failure, for metrics. */
  onStepError?: (step: string, reason: string) => void;
}

/** One pass's result; goOn: its step asked to go on once its write is in (StepOutcome.goOn). */
type PassResult = Result & { goOn?: boolean };

/** How a pass ended, for conclude(). */
interface Outcome {
  phase?: Phase;
  reason?: string;
  message?: string;
  requeueAfterSeconds?: number;
  error?: StepError;
  step?: string;
}

/** A claim found the object changed meanwhile: the pass ends, the watch brings the newer one. */
export class Superseded extends Error {
  override name = "Superseded";
}

/** Raised after status was written, so the queue backs off before the next try. */
export class RetryLater extends Error {
  override name = "RetryLater";
}

const objectPath = (vs: VirtualServer) =>
  `/apis/${GROUP}/${VERSION}/namespaces/${vs.metadata.namespace}/${VS_PLURAL}/${vs.metadata.name}`;

export class VirtualServerReconciler {
  /**
   * The object this process last wrote per key, and the versions that write replaced (as
   * client-go's MutationCache): while the cache still shows one of those, the written object is
   * the current one. Without it, a reconcile woken before the watch brings our own status write
   * (a watch down, its relist backing off) acts on the status before it: a vSphere task that
   * already ended hides the one started after it, and that one is started again.
   */
  private readonly written = new Map<string, { replaced: Set<string>; obj: VirtualServer }>();

  constructor(private readonly deps: ReconcilerDeps) {}

  /** The cached object, or what this process wrote over it when the cache is behind. */
  private current(key: string): VirtualServer | undefined {
    const cached = this.deps.getServer(key);
    const w = this.written.get(key);
    if (!w) return cached;
    if (
      cached &&
      cached.metadata.uid === w.obj.metadata.uid &&
      w.replaced.has(cached.metadata.resourceVersion ?? "")
    )
      return w.obj;
    this.written.delete(key); // the cache has caught up (or moved on)
    return cached;
  }

  /** Remembers a successful write of `before` (the version sent) that returned `after`. */
  private wrote(before: VirtualServer, after: VirtualServer): void {
    const key = `${before.metadata.namespace}/${before.metadata.name}`;
    const w = this.written.get(key);
    const replaced =
      w && w.obj.metadata.resourceVersion === before.metadata.resourceVersion
        ? w.replaced
        : new Set<string>();
    replaced.add(before.metadata.resourceVersion ?? "");
    this.written.set(key, { replaced, obj: after });
  }

  async reconcile(key: string): Promise<Result> {
    const before = this.written.get(key)?.obj;
    const { goOn, ...result } = await this.reconcileOnce(key);
    // A step that only wrote down what it does next (StepOutcome.goOn) goes on here, once, from
    // the object it wrote: requeued, it would wait behind every other key for one quick call.
    const wrote = this.written.get(key)?.obj;
    if (!goOn || !wrote || wrote === before) return result;
    const next = await this.reconcileOnce(key);
    delete next.goOn; // once only: a second intent waits its turn in the queue
    return next;
  }

  private async reconcileOnce(key: string): Promise<PassResult> {
    const vs = this.current(key);
    if (!vs) return {};
    const log = this.deps.logger.child({ virtualserver: key });
    const cls = this.deps.getClass(vs.spec.className);
    const deleting = !!vs.metadata.deletionTimestamp;
    let invalid: InvalidClassField | undefined;
    let ctx: ReconcileContext | undefined;
    if (cls) {
      let settings;
      try {
        settings = effectiveClass(cls);
      } catch (err) {
        if (!(err instanceof InvalidClassField)) throw err;
        invalid = err;
        // Deleting must not wait for a class fix: defaults stand in for the bad values.
        settings = effectiveClass(cls, true);
      }
      ctx = { vs, cls, settings, status: structuredClone(vs.status ?? {}), log };
    }

    if (deleting) return this.finalize(vs, ctx, log);

    const status: VirtualServerStatus = ctx?.status ?? structuredClone(vs.status ?? {});
    if (invalid) {
      const err = new StepError(
        "InvalidClass",
        `VirtualServerClass ${vs.spec.className}: ${invalid.message}; fix the class. vsop goes on when it is fixed.`,
        { cause: invalid, untilClassChanges: true },
      );
      return this.conclude(vs, status, log, { error: err, step: "class" });
    }
    if (!ctx) {
      const err = new StepError(
        "ClassNotFound",
        `VirtualServerClass ${vs.spec.className} does not exist; create it or fix spec.className. ` +
          "vsop goes on when it appears.",
        { untilClassChanges: true },
      );
      return this.conclude(vs, status, log, { error: err, step: "class" });
    }
    const c = ctx;
    c.claim = async () => {
      const claimed = await this.ensureMetadata(c, true);
      if (!claimed) throw new Superseded();
      c.vs = claimed;
    };

    const waiting = await this.runSteps(
      c,
      this.deps.steps.map((step) => [step.name, () => step.run(c)]),
    );
    const result =
      waiting ??
      (await this.concludeSteps(c, {
        phase: "Ready",
        reason: "Provisioned",
        message: `${vs.spec.hostname} is provisioned and configured.`,
      }));
    return sooner(result, c.recheckAfterSeconds);
  }

  /**
   * The labels from the hostname's parts and the list shard's (api/list-shards.ts) and, with
   * `claim`, the finalizer, in one write, only when missing. Returns the object as written, or
   * undefined when it changed meanwhile (the watch brings the newer one).
   */
  private async ensureMetadata(
    ctx: ReconcileContext,
    claim: boolean,
  ): Promise<VirtualServer | undefined> {
    const vs = ctx.vs;
    let labels: Record<string, string> = {};
    try {
      // The naming step's parse when it ran: a custom pattern runs under the watchdog.
      labels = partLabels(
        ctx.parts ?? parseHostname(vs.spec.hostname, ctx.cls.spec.naming?.pattern),
      );
    } catch {
      // The naming step reports the violation.
    }
    labels[LIST_SHARD_LABEL] = listShardOf(vs.metadata.name);
    const current = vs.metadata.labels ?? {};
    const missingLabels = Object.entries(labels).some(([k, v]) => current[k] !== v);
    const hasFinalizer = vs.metadata.finalizers?.includes(FINALIZER) ?? false;
    const addFinalizer = claim && !hasFinalizer;
    if (!missingLabels && !addFinalizer) return vs;
    try {
      const updated = await this.deps.kube.mergePatch<VirtualServer>(objectPath(vs), {
        metadata: {
          resourceVersion: vs.metadata.resourceVersion,
          labels: { ...current, ...labels },
          ...(addFinalizer && { finalizers: [...(vs.metadata.finalizers ?? []), FINALIZER] }),
        },
      });
      this.wrote(vs, updated);
      if (addFinalizer) ctx.log.info("finalizer added: the object may own a VM from now on");
      return updated;
    } catch (err) {
      if (isConflict(err) || isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async finalize(
    vs: VirtualServer,
    ctx: ReconcileContext | undefined,
    log: Logger,
  ): Promise<Result> {
    if (!vs.metadata.finalizers?.includes(FINALIZER)) return {};
    const status = ctx?.status ?? structuredClone(vs.status ?? {});
    if (ctx) {
      const finalizers = [...this.deps.steps]
        .reverse()
        .flatMap((step): [string, () => Promise<StepOutcome>][] =>
          step.finalize ? [[`${step.name}/finalize`, () => step.finalize!(ctx)]] : [],
        );
      const waiting = await this.runSteps(ctx, finalizers, "Deleting");
      if (waiting) return waiting;
    } else if (vs.status?.vm?.moRef || vs.status?.vm?.name) {
      // Without its class vsop cannot reach the VM; keep the finalizer rather than lose track.
      return this.conclude(vs, status, log, {
        error: new StepError(
          "ClassNotFound",
          `VirtualServerClass ${vs.spec.className} is gone, so VM ${vs.status.vm.moRef} cannot be ` +
            "cleaned up; recreate the class, or remove the finalizer to leave the VM behind.",
          { untilClassChanges: true },
        ),
        step: "finalize",
        phase: "Deleting",
      });
    }
    try {
      await this.deps.kube.mergePatch(objectPath(vs), {
        metadata: {
          resourceVersion: vs.metadata.resourceVersion,
          finalizers: vs.metadata.finalizers.filter((f) => f !== FINALIZER),
        },
      });
      log.info("finalizer removed; object released");
    } catch (err) {
      if (!isConflict(err) && !isNotFound(err)) throw err;
    }
    return {};
  }

  /** Runs the calls in order; the first that waits or fails concludes the reconcile. */
  private async runSteps(
    ctx: ReconcileContext,
    calls: [string, () => Promise<StepOutcome>][],
    phase?: Phase,
  ): Promise<PassResult | undefined> {
    for (const [step, call] of calls) {
      throwIfAborted();
      try {
        const outcome = await call();
        if (!outcome.done) {
          const result = await this.concludeSteps(ctx, {
            phase: phase ?? outcome.phase,
            reason: outcome.reason,
            message: outcome.message,
            requeueAfterSeconds: outcome.waitSeconds,
          });
          return outcome.goOn ? { ...result, goOn: true } : result;
        }
      } catch (err) {
        if (err instanceof Superseded) return {};
        return this.concludeSteps(ctx, { error: classify(err, step), step, phase });
      }
    }
    return undefined;
  }

  /**
   * conclude() for a pass that ran steps: from the object as the steps left it (a claim wrote
   * it), with the hostname labels put on first when they are missing (one write, before status).
   */
  private async concludeSteps(ctx: ReconcileContext, o: Outcome): Promise<Result> {
    if (!ctx.vs.metadata.deletionTimestamp) {
      const labelled = await this.ensureMetadata(ctx, false);
      if (!labelled) return {};
      ctx.vs = labelled;
    }
    return this.conclude(ctx.vs, ctx.status, ctx.log, o);
  }

  /** Sets Ready and phase from the outcome, writes status if it changed, records Events. */
  private async conclude(
    vs: VirtualServer,
    status: VirtualServerStatus,
    log: Logger,
    o: Outcome,
  ): Promise<Result> {
    const ctx = { vs, status, log } as ReconcileContext;
    const err = o.error;
    if (err) {
      const st = err.options.status ?? "False";
      if (err.options.condition) condition(ctx, err.options.condition, st, err.reason, err.message);
      condition(ctx, "Ready", "False", err.reason, err.message);
      status.phase = o.phase ?? (RETRIED_REASONS.has(err.reason) ? "Waiting" : "Failed");
      this.deps.onStepError?.(o.step ?? "unknown", err.reason);
    } else {
      const ready = o.phase === "Ready";
      condition(ctx, "Ready", ready ? "True" : "False", o.reason!, o.message!);
      // A rebuilt VM exists all along: its power-on and install data are part of Installing.
      status.phase = o.phase === "Creating" && rebuilding(status) ? "Installing" : o.phase;
    }
    status.observedGeneration = vs.metadata.generation;

    const before = vs.status ?? {};
    if (!jsonEqual(before, status)) {
      try {
        this.wrote(
          vs,
          await this.deps.kube.replace<VirtualServer>(`${objectPath(vs)}/status`, {
            ...vs,
            status,
          }),
        );
      } catch (e) {
        if (isConflict(e) || isNotFound(e)) throw new RetryLater("status changed meanwhile");
        throw e;
      }
      this.recordTransitions(vs, before.conditions ?? [], status.conditions ?? [], log);
      this.recordInstallProgress(vs, before, status);
      for (const e of rebuildEvents(before, status, vs.spec.hostname))
        this.deps.recorder.record(
          { apiVersion: API_VERSION, kind: "VirtualServer", metadata: vs.metadata },
          "Normal",
          e.reason,
          e.message,
        );
    }
    if (err) {
      if (err.options.untilClassChanges) return {};
      if (err.options.retryAfterSeconds !== undefined)
        return { requeueAfterSeconds: err.options.retryAfterSeconds };
      throw new RetryLater(err.message);
    }
    return o.requeueAfterSeconds !== undefined
      ? { requeueAfterSeconds: o.requeueAfterSeconds }
      : {};
  }

  /** One Normal Event when the installer's first sign of life reaches status (it stays there). */
  private recordInstallProgress(
    vs: VirtualServer,
    before: VirtualServerStatus,
    after: VirtualServerStatus,
  ): void {
    const at = after.install?.kickstartFetchedAt;
    if (!at || before.install?.kickstartFetchedAt) return;
    const method = after.install?.method ?? "network";
    this.deps.recorder.record(
      { apiVersion: API_VERSION, kind: "VirtualServer", metadata: vs.metadata },
      "Normal",
      method === "network" ? "KickstartFetched" : "InstallerStarted",
      method === "network"
        ? `The installer of ${vs.spec.hostname} fetched its kickstart at ${at}.`
        : `The installing system of ${vs.spec.hostname} (${method} boot) fetched its one-time keys at ${at}.`,
    );
  }

  private recordTransitions(
    vs: VirtualServer,
    before: Condition[],
    after: Condition[],
    log: Logger,
  ): void {
    for (const c of after) {
      const old = before.find((b) => b.type === c.type);
      if (old && old.status === c.status && old.reason === c.reason) continue;
      const warning =
        c.status !== "True" && !PROGRESS_REASONS.has(c.reason) && !SUSPENDED_REASONS.has(c.reason);
      log[warning ? "warn" : "info"](
        { condition: c.type, status: c.status, reason: c.reason, message: c.message },
        "condition changed",
      );
      if (c.type === "Ready" || c.status === "True" || warning) {
        this.deps.recorder.record(
          { apiVersion: API_VERSION, kind: "VirtualServer", metadata: vs.metadata },
          warning ? "Warning" : "Normal",
          c.type === "Ready" || c.status !== "True" ? c.reason : c.type,
          c.message,
        );
      }
    }
  }
}

/** Reasons that say "in progress", not "something is wrong". */
export const PROGRESS_REASONS = new Set([
  "Provisioned",
  "Resolved",
  "Creating",
  "PoweringOn",
  "Installing",
  "WaitingForInstall",
  "Disconnecting",
  "Configuring",
  "PuppetRunning",
  "PuppetRunQueued",
  "Deleting",
  "ConnectingToVCenter",
  "Created",
  "Installed",
  "Disconnected",
  "PoweringOff",
  "Restarting",
  "Resizing",
  "Rebuilding",
  "Adopting",
]);

/**
 * Reasons for a server that is as its spec asks but not running (spec.powerState Off): not a
 * failure (a Normal Event, phase PoweredOff), and Argo CD shows it Suspended, not Degraded.
 */
export const SUSPENDED_REASONS = new Set(["PoweredOff"]);

/**
 * Reasons vsop retries on its own and expects to clear without anyone changing the object or its
 * class: phase Waiting (Argo CD: Progressing). Every other failure reason is phase Failed: a
 * person has to act (vsop still retries, so fixing the cause is enough). README's troubleshooting
 * table shows the same split (a unit test compares them).
 */
export const RETRIED_REASONS = new Set([
  "NameNotResolvable",
  "DNSUnavailable",
  "ServiceNameMissing",
  "ClassNotFound",
  "SecretNotFound",
  "ConfigMapNotFound",
  "APIServerUnavailable",
  "VCenterUnreachable",
  "DatastoreUploadFailed",
  "BrokerUnreachable",
  "NodeNotReachable",
  "PowerCycleQueued",
  "PuppetCAUnreachable",
]);

/** The result, requeued no later than `seconds` when a step asked to look again. */
function sooner(result: Result, seconds: number | undefined): Result {
  if (seconds === undefined || (result.requeueAfterSeconds ?? Infinity) <= seconds) return result;
  return { requeueAfterSeconds: seconds };
}

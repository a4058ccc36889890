// What one reconcile of one VirtualServer works with: the object, its class, a status draft that
// the steps fill in, and the clients of the outside world.
import type { Logger } from "pino";
import type {
  ConditionStatus,
  ConditionType,
  Phase,
  VirtualServer,
  VirtualServerClass,
  VirtualServerStatus,
} from "../../api/types.js";
import { setCondition } from "../../controller/conditions.js";
import type { EffectiveClass } from "../../api/effective-class.js";
import type { HostnameParts } from "../../naming/hostname.js";
import type { ResolvedName } from "../../naming/resolve.js";
import type { ExtraNetwork } from "../../naming/extra-networks.js";

export interface ReconcileContext {
  vs: VirtualServer;
  cls: VirtualServerClass;
  /** The class parsed once: defaults applied, durations in seconds. */
  settings: EffectiveClass;
  status: VirtualServerStatus;
  log: Logger;
  /** Filled by the naming step for the steps after it. */
  parts?: HostnameParts;
  resolved?: ResolvedName;
  /** spec.extraNetworks resolved, in spec order (the naming step). */
  extraNetworks?: ExtraNetwork[];
  /** The vSphere operation whose task ended in this reconcile (see vsphere-task.ts). */
  finished?: string;
  /** A step went on with stale knowledge (DNS out) and wants to look again this soon. */
  recheckAfterSeconds?: number;
  /**
   * Puts vsop's finalizer (and the hostname labels) on the object, once, before a step makes
   * something deletion must clean up: the finalizer is the record that a VM may exist. An object
   * that never got this far has none and is deleted at once, with or without vsop. Throws
   * Superseded when the object changed meanwhile. Absent in unit tests of single steps.
   */
  claim?: () => Promise<void>;
}

/**
 * A step either finished (the world matches) or asks to be called again later. `goOn`: the step
 * only wrote down what it does next (an intent that must be in status before the act); once that
 * write went through, the steps run again at once, in the same worker.
 */
export type StepOutcome =
  | { done: true }
  | {
      done: false;
      waitSeconds: number;
      phase: Phase;
      reason: string;
      message: string;
      goOn?: boolean;
    };

export interface Step {
  name: string;
  run(ctx: ReconcileContext): Promise<StepOutcome>;
  /** Undoes what the step created, when the object is deleted (steps run in reverse). */
  finalize?(ctx: ReconcileContext): Promise<StepOutcome>;
}

export const DONE: StepOutcome = { done: true };

export function wait(
  waitSeconds: number,
  phase: Phase,
  reason: string,
  message: string,
): StepOutcome {
  return { done: false, waitSeconds, phase, reason, message };
}

/** An intent written to status: the next pass, which acts on it, runs once the write is in. */
export function intentWritten(phase: Phase, reason: string, message: string): StepOutcome {
  return { done: false, waitSeconds: 0, phase, reason, message, goOn: true };
}

export function condition(
  ctx: ReconcileContext,
  type: ConditionType,
  status: ConditionStatus,
  reason: string,
  message: string,
): void {
  ctx.status.conditions = setCondition(
    ctx.status.conditions ?? [],
    type,
    status,
    reason,
    message,
    ctx.vs.metadata.generation,
  );
}

// The error a reconcile step reports: a short CamelCase reason for the condition, a sentence a
// person can act on, and whether the condition is False (the world says no) or Unknown (we could
// not find out, e.g. DNS or vCenter unreachable).
import type { ConditionType } from "./api/types.js";

export interface StepErrorOptions {
  /** The condition the failure belongs to; Ready always follows. */
  condition?: ConditionType;
  status?: "False" | "Unknown";
  /** Retry after this many seconds instead of the queue's backoff. */
  retryAfterSeconds?: number;
  /**
   * No retry: the class's watch wakes the server when the class appears or changes (and the
   * resync period still looks). Servers waiting on a missing class cost nothing meanwhile.
   */
  untilClassChanges?: boolean;
  cause?: unknown;
}

export class StepError extends Error {
  override name = "StepError";
  constructor(
    readonly reason: string,
    message: string,
    readonly options: StepErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
  }
}

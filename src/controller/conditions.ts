// metav1.Condition bookkeeping: lastTransitionTime changes only when the status flips.
import type { Condition, ConditionStatus } from "../api/types.js";
import { scrub } from "../observability/redact.js";

export function setCondition(
  conditions: Condition[],
  type: string,
  status: ConditionStatus,
  reason: string,
  message: string,
  generation: number | undefined,
  now: () => string = () => new Date().toISOString(),
): Condition[] {
  const old = conditions.find((c) => c.type === type);
  const next: Condition = {
    type,
    status,
    reason,
    // Messages quote causes (URLs, server answers); they never carry a credential out.
    message: scrub(message),
    lastTransitionTime: old && old.status === status ? old.lastTransitionTime : now(),
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
  };
  return old ? conditions.map((c) => (c.type === type ? next : c)) : [...conditions, next];
}

export function getCondition(conditions: Condition[] | undefined, type: string) {
  return conditions?.find((c) => c.type === type);
}

export function isTrue(conditions: Condition[] | undefined, type: string): boolean {
  return getCondition(conditions, type)?.status === "True";
}

export function removeCondition(conditions: Condition[], type: string): Condition[] {
  return conditions.filter((c) => c.type !== type);
}

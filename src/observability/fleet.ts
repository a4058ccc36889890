// The fleet as the informer cache sees it, counted when Prometheus scrapes (never per reconcile):
// servers by phase and, for those not Ready, by the Ready condition's reason, which alerts key on
// (InstallTimedOut, VCenterUnreachable, BrokerUnreachable, ...). No per-server labels.
import type { Phase, VirtualServer } from "../api/types.js";

/** Every phase (the Record makes the compiler check none is missing), so panels see zeros. */
const PHASES: Record<Phase, true> = {
  Pending: true,
  Creating: true,
  Installing: true,
  Configuring: true,
  Ready: true,
  Waiting: true,
  Failed: true,
  Deleting: true,
  PoweredOff: true,
};

/** Condition reasons are CamelCase words; anything else is one label value, not a new series. */
const REASON = /^[A-Za-z][A-Za-z0-9]{0,63}$/;

/** Servers per phase; one not reconciled yet counts as Pending, an unknown phase as Unknown. */
export function countByPhase(servers: readonly VirtualServer[]): Map<string, number> {
  const counts = new Map<string, number>(Object.keys(PHASES).map((p) => [p, 0]));
  for (const vs of servers) {
    const phase = vs.status?.phase ?? "Pending";
    const key = Object.hasOwn(PHASES, phase) ? phase : "Unknown";
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Servers whose Ready condition is not True, per its reason. */
export function countNotReady(servers: readonly VirtualServer[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const vs of servers) {
    const ready = vs.status?.conditions?.find((c) => c.type === "Ready");
    if (!ready || ready.status === "True") continue;
    const key = REASON.test(ready.reason) ? ready.reason : "Other";
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

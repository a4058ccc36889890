// `vsop run` flags: parsed and validated here, so a typo stops the operator before it starts.
import { parseArgs } from "node:util";
import { durationSeconds } from "../api/duration.js";

export interface RunConfig {
  kubeconfig?: string;
  /** Empty string: all namespaces. */
  namespace: string;
  labelSelector?: string;
  workers: number;
  resyncPeriodSeconds: number;
  logLevel: "trace" | "debug" | "info" | "warn" | "error";
  logFormat: "json" | "pretty";
  metricsBindAddress: string;
  healthProbeBindAddress: string;
  provisioningBindAddress: string;
  provisioningURL?: string;
  leaderElect: boolean;
  leaderElectionNamespace: string;
  leaderElectionID: string;
  leaseDurationSeconds: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  reconcileTimeoutMs: number;
  /** Where the Secrets and ConfigMaps that classes name live, and the install token Secrets. */
  operatorNamespace: string;
  /** Larger MCollective replies are dropped before they are decoded. */
  mcollectiveMaxReplyBytes: number;
  /**
   * A file with the secret the Puppet master's autosign command presents; POST /autosign answers
   * only when it is set.
   */
  autosignSecretFile?: string;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export const RUN_FLAGS = {
  kubeconfig: { type: "string", help: "kubeconfig path (default: in-cluster, then $KUBECONFIG)" },
  namespace: { type: "string", help: "watch one namespace (default: all namespaces)" },
  "label-selector": {
    type: "string",
    help: "only VirtualServers matching this selector (sharding)",
  },
  workers: { type: "string", help: "concurrent reconciles (default 8)" },
  "resync-period": {
    type: "string",
    help: "re-reconcile every object this often, e.g. 10m (default 10m)",
  },
  "log-level": { type: "string", help: "trace|debug|info|warn|error (default info)" },
  "log-format": { type: "string", help: "json|pretty (default json)" },
  "metrics-bind-address": {
    type: "string",
    help: "Prometheus /metrics address (default :8080, 0 = off)",
  },
  "health-probe-bind-address": {
    type: "string",
    help: "/healthz and /readyz address (default :8081)",
  },
  "provisioning-bind-address": {
    type: "string",
    help: "kickstart and /built callback address (default :8082)",
  },
  "provisioning-url": {
    type: "string",
    help: "URL installers use to reach the provisioning server",
  },
  "leader-elect": { type: "boolean", help: "elect a leader through a Lease; only it reconciles" },
  "leader-election-namespace": {
    type: "string",
    help: "namespace of the Lease (default vsop-system)",
  },
  "leader-election-id": { type: "string", help: "name of the Lease (default vsop-leader)" },
  "lease-duration": { type: "string", help: "leader lease duration, e.g. 15s (default 15s)" },
  "backoff-base": { type: "string", help: "first retry delay after an error (default 1s)" },
  "backoff-max": {
    type: "string",
    help: "longest retry delay after repeated errors (default 60s)",
  },
  "reconcile-timeout": {
    type: "string",
    help: "abort (and retry) a reconcile still running after this long (default 60s)",
  },
  "operator-namespace": {
    type: "string",
    help: "namespace of class Secrets/ConfigMaps and install tokens (default $POD_NAMESPACE or vsop-system)",
  },
  "mcollective-max-reply-size": {
    type: "string",
    help: "drop larger MCollective replies undecoded, e.g. 256Ki or 1Mi (default $VSOP_MCOLLECTIVE_MAX_REPLY_SIZE or 256Ki)",
  },
  "autosign-secret-file": {
    type: "string",
    help: "file with the secret the Puppet master's autosign command sends to /autosign (default $VSOP_AUTOSIGN_SECRET_FILE; unset: /autosign answers 404)",
  },
  help: { type: "boolean", help: "show this help" },
} as const;

export function runHelp(): string {
  const lines = Object.entries(RUN_FLAGS).map(([name, f]) => `  --${name.padEnd(28)} ${f.help}`);
  return `Usage: vsop run [flags]\n\nRuns the VirtualServer operator.\n\nFlags:\n${lines.join("\n")}\n`;
}

/** Parses a duration such as 30s, 10m, 1h or a bare number of seconds. */
export function parseDuration(value: string, flag: string): number {
  const seconds = durationSeconds(value);
  if (seconds === undefined)
    throw new UsageError(`--${flag}: "${value}" is not a duration such as 30s, 10m or 1h`);
  return seconds;
}

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value))
    throw new UsageError(`--${flag}: "${value}" is not one of ${allowed.join(", ")}`);
  return value as T;
}

/** A byte size: a whole number with an optional Ki or Mi suffix, from 1 KiB to 64 MiB. */
export function parseSize(value: string, flag: string): number {
  const m = /^(\d+)(Ki|Mi)?$/.exec(value.trim());
  const n = m ? Number(m[1]) * (m[2] === "Mi" ? 1024 * 1024 : m[2] === "Ki" ? 1024 : 1) : NaN;
  if (!(n >= 1024 && n <= 64 * 1024 * 1024))
    throw new UsageError(`--${flag}: "${value}" is not a size from 1Ki to 64Mi, such as 256Ki`);
  return n;
}

function positiveInt(value: string, flag: string, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new UsageError(`--${flag}: "${value}" is not a whole number from 1 to ${max}`);
  return n;
}

export function parseRunFlags(args: string[]): RunConfig & { help: boolean } {
  const options = Object.fromEntries(
    Object.entries(RUN_FLAGS).map(([k, v]) => [k, { type: v.type }]),
  ) as Record<string, { type: "string" | "boolean" }>;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const str = (k: string) => values[k] as string | undefined;
  return {
    help: values.help === true,
    kubeconfig: str("kubeconfig"),
    namespace: str("namespace") ?? "",
    labelSelector: str("label-selector"),
    workers: positiveInt(str("workers") ?? "8", "workers", 256),
    resyncPeriodSeconds: parseDuration(str("resync-period") ?? "10m", "resync-period"),
    logLevel: oneOf(
      str("log-level") ?? "info",
      ["trace", "debug", "info", "warn", "error"],
      "log-level",
    ),
    logFormat: oneOf(str("log-format") ?? "json", ["json", "pretty"], "log-format"),
    metricsBindAddress: str("metrics-bind-address") ?? ":8080",
    healthProbeBindAddress: str("health-probe-bind-address") ?? ":8081",
    provisioningBindAddress: str("provisioning-bind-address") ?? ":8082",
    provisioningURL: str("provisioning-url"),
    leaderElect: values["leader-elect"] === true,
    leaderElectionNamespace: str("leader-election-namespace") ?? "vsop-system",
    leaderElectionID: str("leader-election-id") ?? "vsop-leader",
    leaseDurationSeconds: parseDuration(str("lease-duration") ?? "15s", "lease-duration"),
    backoffBaseMs: parseDuration(str("backoff-base") ?? "1s", "backoff-base") * 1000,
    backoffMaxMs: parseDuration(str("backoff-max") ?? "60s", "backoff-max") * 1000,
    reconcileTimeoutMs:
      parseDuration(str("reconcile-timeout") ?? "60s", "reconcile-timeout") * 1000,
    operatorNamespace: str("operator-namespace") ?? process.env.POD_NAMESPACE ?? "vsop-system",
    mcollectiveMaxReplyBytes: parseSize(
      str("mcollective-max-reply-size") ?? process.env.VSOP_MCOLLECTIVE_MAX_REPLY_SIZE ?? "256Ki",
      "mcollective-max-reply-size",
    ),
    autosignSecretFile:
      str("autosign-secret-file") ?? (process.env.VSOP_AUTOSIGN_SECRET_FILE || undefined),
  };
}

/** Splits "host:port" / ":port" into what net.Server.listen takes; "0" disables. */
export function parseBindAddress(
  addr: string,
  flag: string,
): { host?: string; port: number } | null {
  if (addr === "0" || addr === "") return null;
  const m = /^(.*):(\d+)$/.exec(addr);
  if (!m) throw new UsageError(`--${flag}: "${addr}" is not host:port or :port`);
  return { host: m[1] || undefined, port: Number(m[2]) };
}

// Typed calls of the puppet agent (mcollective/agent/puppet.rb, same actions and fields as the
// widely used MCollective puppet agent) on one node at a time.
import type { McoClient } from "./client.js";
import { McoRpcError, McoTimeout } from "./errors.js";
import type { RubyValue } from "./marshal.js";
import { verifiedReplyData } from "./identity.js";

export interface RunOnceOptions {
  environment?: string;
  noop?: boolean;
  tags?: string[];
}

export interface RunOnceResult {
  identity: string;
  summary: string;
  /** When the node started the run (epoch seconds, node clock); 0 when it did not say. */
  initiatedAt: number;
}

export interface PuppetStatus {
  identity: string;
  applying: boolean;
  enabled: boolean;
  idling: boolean;
  daemonPresent: boolean;
  /** Epoch seconds of the last applied catalog; 0 when there was none. */
  lastrun: number;
  sinceLastrun: number | null;
  /** applying, idling, stopped or disabled. */
  status: string;
  message: string;
  disableMessage: string;
}

export interface LastRunSummary {
  identity: string;
  changedResources: number;
  failedResources: number;
  outOfSyncResources: number;
  totalResources: number;
  totalTime: number;
  configRetrievalTime: number;
  /** Epoch seconds of the last run; 0 when Puppet has not run yet. */
  lastrun: number;
  /** A run is still going (false when the node's agent does not tell). */
  applying: boolean;
  sinceLastrun: number | null;
  configVersion: string | null;
  /** last_run_summary.yaml as Puppet wrote it. */
  summary: Record<string, unknown>;
  /** Failed resources (Type[title], the first ones) from the run's report; [] when not told. */
  failedResourceNames: string[];
  /** The run's report time (ISO 8601, node clock) when the agent read the report. */
  reportTime: string | null;
}

/** runonce refused because a run is in progress: wait and ask again. */
export class PuppetBusyError extends McoRpcError {
  override name = "PuppetBusyError";
}

/**
 * A reply that lacks a field vsop needs to act on it (a foreign or broken agent, a run that died
 * before it wrote its summary): it proves nothing, so it is not taken as success.
 */
export class PuppetReplyIncomplete extends Error {
  override name = "PuppetReplyIncomplete";
  constructor(
    readonly identity: string,
    readonly action: string,
    readonly missing: string[],
  ) {
    super(`the puppet#${action} reply of ${identity} lacks ${missing.join(", ")}`);
  }
}

/** The fields of `d` that are not numbers (numeric strings count), as the reply named them. */
function missingNumbers(d: Record<string, unknown>, fields: string[]): string[] {
  return fields.filter((f) => Number.isNaN(num(d[f], Number.NaN)));
}

/** runonce refused because Puppet is disabled on the node (puppet agent --disable or disable). */
export class PuppetDisabledError extends McoRpcError {
  override name = "PuppetDisabledError";
}

function num(value: unknown, fallback: number): number {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : fallback;
}

const bool = (value: unknown): boolean => value === true || value === "true";
const text = (value: unknown): string =>
  value === null || value === undefined ? "" : String(value);
const optionalNum = (value: unknown): number | null => {
  const n = num(value, Number.NaN);
  return Number.isNaN(n) ? null : n;
};

export class PuppetClient {
  /** How long each call waits for the node's reply before it fails with McoTimeout. */
  readonly timeoutMs: number;

  constructor(
    private readonly mco: McoClient,
    options: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 20_000;
  }

  /** Starts one run in the background on the node; returns as soon as the node accepted it. */
  // identityKey: the server's identity public key; when given, only a reply signed with it
  // counts (mcollective/identity.ts) and its signed data is what is read.

  async runonce(
    identity: string,
    options: RunOnceOptions = {},
    identityKey?: string,
  ): Promise<RunOnceResult> {
    const data: Record<string, RubyValue> = {};
    if (options.environment) data.environment = options.environment;
    if (options.noop) data.noop = true;
    if (options.tags?.length) data.tags = options.tags.join(",");
    const d = await this.call(identity, "runonce", data, identityKey);
    // Without the node's start time the run cannot be told from the one before it.
    const missing = missingNumbers(d, ["initiated_at"]);
    if (missing.length) throw new PuppetReplyIncomplete(identity, "runonce", missing);
    return { identity, summary: text(d.summary), initiatedAt: num(d.initiated_at, 0) };
  }

  async status(identity: string, identityKey?: string): Promise<PuppetStatus> {
    const d = await this.call(identity, "status", {}, identityKey);
    const missing = [
      ...([true, false, "true", "false"].includes(d.applying as string) ? [] : ["applying"]),
      ...missingNumbers(d, ["lastrun"]),
    ];
    if (missing.length) throw new PuppetReplyIncomplete(identity, "status", missing);
    return {
      identity,
      applying: bool(d.applying),
      enabled: bool(d.enabled),
      idling: bool(d.idling),
      daemonPresent: bool(d.daemon_present),
      lastrun: num(d.lastrun, 0),
      sinceLastrun: optionalNum(d.since_lastrun),
      status: text(d.status),
      message: text(d.message),
      disableMessage: text(d.disable_message),
    };
  }

  async lastRunSummary(identity: string, identityKey?: string): Promise<LastRunSummary> {
    const d = await this.call(identity, "last_run_summary", {}, identityKey);
    // The counts and the time decide whether the run vsop asked for finished, and how.
    const missing = missingNumbers(d, [
      "lastrun",
      "failed_resources",
      "changed_resources",
      "total_resources",
    ]);
    if (missing.length) throw new PuppetReplyIncomplete(identity, "last_run_summary", missing);
    const summary = d.summary;
    const names = Array.isArray(d.failed_resource_names) ? d.failed_resource_names : [];
    return {
      identity,
      changedResources: num(d.changed_resources, -1),
      failedResources: num(d.failed_resources, -1),
      outOfSyncResources: num(d.out_of_sync_resources, -1),
      totalResources: num(d.total_resources, 0),
      totalTime: num(d.total_time, 0),
      configRetrievalTime: num(d.config_retrieval_time, -1),
      lastrun: num(d.lastrun, 0),
      applying: bool(d.applying),
      sinceLastrun: optionalNum(d.since_lastrun),
      configVersion:
        d.config_version === null || d.config_version === undefined
          ? null
          : String(d.config_version),
      summary:
        summary && typeof summary === "object" && !Array.isArray(summary)
          ? (summary as Record<string, unknown>)
          : {},
      failedResourceNames: names.slice(0, 10).map((n) => text(n).slice(0, 200)),
      reportTime: typeof d.report_time === "string" ? d.report_time.slice(0, 64) : null,
    };
  }

  async enable(identity: string): Promise<string> {
    return text((await this.call(identity, "enable")).status);
  }

  async disable(identity: string, message?: string): Promise<string> {
    return text((await this.call(identity, "disable", message ? { message } : {})).status);
  }

  private async call(
    identity: string,
    action: string,
    data: Record<string, RubyValue> = {},
    identityKey?: string,
  ): Promise<Record<string, unknown>> {
    const result = await this.mco.request({
      agent: "puppet",
      action,
      data,
      identity,
      timeoutMs: this.timeoutMs,
    });
    const reply = result.replies.find((r) => r.sender === identity);
    if (!reply)
      throw new McoTimeout("puppet", action, result.requestId, this.timeoutMs, [identity]);
    // With an identity key, a reply the server did not sign counts for nothing, failures included.
    const d = identityKey
      ? verifiedReplyData(
          reply,
          { requestId: result.requestId, identity, agent: "puppet", action },
          identityKey,
        )
      : reply.data;
    if (reply.statuscode !== 0) {
      const args = [identity, "puppet", action, reply.statuscode, reply.statusmsg] as const;
      if (action === "runonce" && /currently applying/i.test(reply.statusmsg))
        throw new PuppetBusyError(...args);
      if (action === "runonce" && /disabled/i.test(reply.statusmsg))
        throw new PuppetDisabledError(...args);
      throw new McoRpcError(...args);
    }
    return d;
  }
}

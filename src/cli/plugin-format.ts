// What `kubectl vsop` prints: plain-text tables in kubectl's style, ages as kubectl renders them,
// and the small decisions of `puppet run` (which time to ask for, when the run is over). Pure
// functions, so the unit tests need no cluster.
import {
  CONDITION_TYPES,
  PUPPET_RUN_REQUESTED_AT,
  type Condition,
  type VirtualServer,
} from "../api/types.js";

/** Colours for a terminal; `plain` everywhere else (a pipe, a file, NO_COLOR, TERM=dumb). */
export interface Paint {
  status(text: string, status: string | undefined): string;
  dim(text: string): string;
  bold(text: string): string;
}

export const plain: Paint = { status: (t) => t, dim: (t) => t, bold: (t) => t };

const sgr = (code: string) => (t: string) => `\x1b[${code}m${t}\x1b[0m`;
export const ansi: Paint = {
  status: (t, s) =>
    s === "True" ? sgr("32")(t) : s === "False" ? sgr("31")(t) : s ? sgr("33")(t) : sgr("2")(t),
  dim: sgr("2"),
  bold: sgr("1"),
};

export function paintFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): Paint {
  return stream.isTTY && env.NO_COLOR === undefined && env.TERM !== "dumb" ? ansi : plain;
}

/**
 * A duration as kubectl prints ages (apimachinery's duration.HumanDuration): 45s, 3m20s, 12m,
 * 5h30m, 36h, 3d4h, 60d, 2y30d, 9y.
 */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const d = Math.floor(hours / 24) % 365;
    const y = Math.floor(hours / 24 / 365);
    return d === 0 ? `${y}y` : `${y}y${d}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

/** The age of an RFC 3339 time at `now`; "<unknown>" for none, as kubectl shows it. */
export function age(iso: string | undefined, now: number): string {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? "<unknown>" : humanDuration(now - t);
}

/** A cell, and how to paint it once padded (padding counts the visible text only). */
export type Cell = string | { text: string; paint: (padded: string) => string };

/**
 * Columns left-aligned and three spaces apart, like kubectl's tables. Trailing blanks are
 * trimmed; the last column is never padded.
 */
export function table(header: string[], rows: Cell[][]): string {
  const text = (c: Cell) => (typeof c === "string" ? c : c.text);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => text(r[i] ?? "").length)),
  );
  const line = (cells: Cell[]) =>
    cells
      .map((c, i) => {
        const padded = i === cells.length - 1 ? text(c) : text(c).padEnd(widths[i]!);
        return typeof c === "string" ? padded : c.paint(padded);
      })
      .join("   ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** The six steps in pipeline order, then any other condition the object carries. */
export function steps(vs: VirtualServer): { type: string; condition?: Condition }[] {
  const conditions = vs.status?.conditions ?? [];
  const known: readonly string[] = CONDITION_TYPES;
  return [
    ...CONDITION_TYPES.map((type) => ({
      type,
      condition: conditions.find((c) => c.type === type),
    })),
    ...conditions
      .filter((c) => !known.includes(c.type))
      .map((c) => ({ type: c.type, condition: c })),
  ];
}

export interface StatusTableOptions {
  now: number;
  /** -A: a NAMESPACE column. */
  allNamespaces?: boolean;
  /** -o wide: the condition's message too. */
  wide?: boolean;
  paint?: Paint;
}

/**
 * Every server's steps, one row per step: name and phase on the server's first row, then STEP,
 * STATUS, REASON and AGE (since the condition last changed); "-" for a step not reached yet.
 */
export function statusTable(servers: VirtualServer[], o: StatusTableOptions): string {
  const paint = o.paint ?? plain;
  const header = [
    ...(o.allNamespaces ? ["NAMESPACE"] : []),
    "NAME",
    "PHASE",
    "STEP",
    "STATUS",
    "REASON",
    "AGE",
    ...(o.wide ? ["MESSAGE"] : []),
  ];
  const rows: Cell[][] = [];
  for (const vs of servers) {
    steps(vs).forEach(({ type, condition: c }, i) => {
      const first = i === 0;
      const status = c?.status ?? "-";
      rows.push([
        ...(o.allNamespaces ? [first ? (vs.metadata.namespace ?? "") : ""] : []),
        first ? vs.metadata.name : "",
        first ? (vs.status?.phase ?? "-") : "",
        type,
        { text: status, paint: (t) => paint.status(t, c?.status) },
        c?.reason || "-",
        c ? age(c.lastTransitionTime, o.now) : "-",
        ...(o.wide ? [oneLine(c?.message ?? "")] : []),
      ]);
    });
  }
  return table(header, rows);
}

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, " ");

/** `kubectl vsop status NAME`: one server in detail. */
export function statusDetail(vs: VirtualServer, now: number, paint: Paint = plain): string {
  const s = vs.status ?? {};
  const when = (iso: string | undefined) => (iso ? `${iso} (${age(iso, now)} ago)` : "-");
  const fields: [string, string][] = [
    ["Name", vs.metadata.name],
    ["Namespace", vs.metadata.namespace ?? ""],
    ["Hostname", vs.spec.hostname],
    ["Class", vs.spec.className],
    ["Phase", s.phase ?? "-"],
    ["Age", age(vs.metadata.creationTimestamp, now)],
  ];
  if (s.address || s.vlan !== undefined)
    fields.push([
      "Address",
      [
        s.address ?? "-",
        s.vlan !== undefined ? `VLAN ${s.vlan}` : undefined,
        s.portGroup ? `port group ${s.portGroup}` : undefined,
      ]
        .filter(Boolean)
        .join(", "),
    ]);
  if (s.vm) {
    const vm = s.vm;
    fields.push([
      "VM",
      [
        vm.moRef ?? "-",
        vm.name,
        vm.powerState,
        vm.instanceUUID && `instance UUID ${vm.instanceUUID}`,
      ]
        .filter(Boolean)
        .join(", "),
    ]);
    for (const nic of vm.nics ?? [])
      fields.push([
        `  NIC (${nic.role})`,
        `${nic.portGroup}${nic.macAddress ? ` ${nic.macAddress}` : ""}, ${nic.connected ? "connected" : "disconnected"}` +
          (nic.hostname ? `, ${nic.hostname}${nic.address ? ` (${nic.address})` : ""}` : ""),
      ]);
  }
  if (s.install) {
    const i = s.install;
    fields.push(["Install", i.method ?? "-"]);
    if (i.startedAt) fields.push(["  started", when(i.startedAt)]);
    if (i.kickstartFetchedAt) fields.push(["  installer seen", when(i.kickstartFetchedAt)]);
    if (i.completedAt) fields.push(["  completed", when(i.completedAt)]);
  }
  fields.push(["Puppet", puppetSummary(vs, now)]);
  const p = s.puppet;
  if (p?.requestedAt) fields.push(["  last request", when(p.requestedAt)]);
  const asked = vs.metadata.annotations?.[PUPPET_RUN_REQUESTED_AT];
  if (asked)
    fields.push([
      "  run requested",
      `${asked} (${p?.requestedFor === asked ? "honoured" : "not honoured yet"})`,
    ]);
  const width = Math.max(...fields.map(([k]) => k.length)) + 2;
  const head = fields.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}`).join("\n");
  const rows: Cell[][] = steps(vs).map(({ type, condition: c }) => [
    type,
    { text: c?.status ?? "-", paint: (t) => paint.status(t, c?.status) },
    c?.reason || "-",
    c ? age(c.lastTransitionTime, now) : "-",
    oneLine(c?.message ?? ""),
  ]);
  const conditions = table(["STEP", "STATUS", "REASON", "AGE", "MESSAGE"], rows)
    .split("\n")
    .map((l) => (l ? `  ${l}` : l))
    .join("\n");
  return `${head}\n\n${paint.bold("Conditions:")}\n${conditions}`;
}

/** "2 changed, 0 failed of 7 resources, 3m ago", or what is known so far. */
export function puppetSummary(vs: VirtualServer, now: number): string {
  const p = vs.status?.puppet;
  if (!p?.lastRunAt) return p?.requestedAt ? "first run requested, not finished yet" : "no run yet";
  return (
    `last run ${age(p.lastRunAt, now)} ago: ${p.changed ?? "?"} changed, ${p.failed ?? "?"} failed of ${p.total ?? "?"} resources` +
    (p.configVersion ? `, config version ${p.configVersion}` : "") +
    (p.environment ? `, environment ${p.environment}` : "")
  );
}

// --- puppet run ------------------------------------------------------------------------------

const toSecond = (ms: number) => Math.floor(ms / 1000) * 1000;
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

/**
 * The annotation value `puppet run` writes: now, to the second (RFC 3339, as Kubernetes writes
 * times). Bumped past the last request and the last honoured value, so that a node clock ahead
 * of this one, or two requests within one second, still ask for a new run.
 */
export function nextRequestTime(vs: VirtualServer, now: number): string {
  const p = vs.status?.puppet ?? {};
  const after = (iso: string | undefined) => {
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? 0 : toSecond(t) + 1000;
  };
  return rfc3339(Math.max(toSecond(now), after(p.requestedAt), after(p.requestedFor)));
}

/**
 * The spec.rebuildRequestedAt value for a new rebuild: now, to the second, and later than the
 * value the server has (or vsop honoured), which would ask for nothing.
 */
export function nextRebuildTime(vs: VirtualServer, now: number): string {
  const after = (iso: string | undefined) => {
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? 0 : toSecond(t) + 1000;
  };
  return rfc3339(
    Math.max(
      toSecond(now),
      after(vs.spec.rebuildRequestedAt),
      after(vs.status?.rebuild?.requestedAt),
    ),
  );
}

export type RunVerdict = "waiting" | "applied" | "failed";

/**
 * Whether the run asked for with `requested` is over: vsop honoured the value (or requested a
 * run at or after it for another reason), a run newer than that request finished, and
 * PuppetApplied says how it went.
 */
export function runVerdict(vs: VirtualServer, requested: string): RunVerdict {
  const p = vs.status?.puppet ?? {};
  const at = (iso: string | undefined) => (iso ? Date.parse(iso) : NaN);
  const honoured = p.requestedFor === requested || at(p.requestedAt) >= at(requested);
  if (!honoured || !p.requestedAt) return "waiting";
  if (!(at(p.lastRunAt) >= at(p.requestedAt))) return "waiting";
  const c = vs.status?.conditions?.find((x) => x.type === "PuppetApplied");
  if (!c || c.reason === "PuppetRunning" || c.status === "Unknown") return "waiting";
  return c.status === "True" ? "applied" : "failed";
}

/** One line of progress while `puppet run` follows: the phase and PuppetApplied. */
export function progressLine(vs: VirtualServer): string {
  const c = vs.status?.conditions?.find((x) => x.type === "PuppetApplied");
  const puppet = c
    ? `PuppetApplied=${c.status} ${c.reason}: ${oneLine(c.message)}`
    : "PuppetApplied -";
  return `phase ${vs.status?.phase ?? "-"}, ${puppet}`;
}

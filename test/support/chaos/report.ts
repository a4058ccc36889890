// What a chaos campaign must leave true, and its figures as `make chaos` prints them.
import type { ChaosReport } from "./campaign.js";
import { OUTAGES } from "./campaign.js";
import type { Exit } from "./replicas.js";

/** Lease losses outside the API server's outages (a leader that cannot renew without cause). */
export function unexplainedLeaseLosses(r: ChaosReport): Exit[] {
  const api = r.outages.filter((o) => o.kind.startsWith("api"));
  return r.exits.filter(
    (e) => e.cause === "leaseLost" && !api.some((o) => e.at >= o.start && e.at <= o.end + 5000),
  );
}

export const duplicateRuns = (r: ChaosReport) =>
  r.puppetRuns.reduce((n, p) => n + Math.max(0, p.runs - 1), 0);

/**
 * Duplicate runs that followed a runonce which reached the server less than 2 s before a kill
 * (sent by a leader that died before it recorded the request): a figure that says where a
 * duplicate came from. Every duplicate is a violation; the run's intent in status prevents these.
 */
export const duplicatesAfterKill = (r: ChaosReport) =>
  r.puppetRuns.reduce(
    (n, p) =>
      n +
      p.at.slice(0, -1).filter((at) => r.kills.some((k) => k.at >= at && k.at - at < 2000)).length,
    0,
  );

/** Every invariant that does not hold, in words; empty when the campaign passed. */
export function violations(r: ChaosReport): string[] {
  const out: string[] = [];
  const n = r.options.servers;
  if (r.servers.length !== n) out.push(`${r.servers.length} servers at the end, expected ${n}`);
  for (const s of r.servers) {
    if (s.vms !== 1) out.push(`${s.name} has ${s.vms} VMs with its owner marker`);
    else if (!s.uuidMatches) out.push(`${s.name}'s VM is not the instanceUUID in its status`);
    if (!s.ready) out.push(`${s.name} is not Ready (${s.reason ?? "no Ready condition"})`);
  }
  for (const o of r.orphans) out.push(`orphaned VM ${o}`);
  if (r.guest.keysLost)
    out.push(`${r.guest.keysLost} installers lost their keys: a retry with their nonce got 410`);
  for (const p of r.puppetRuns)
    if (p.runs > 1) out.push(`${p.identity} (install ${p.generation}) got ${p.runs} Puppet runs`);
  for (const e of r.exits.filter((x) => x.cause === "crash"))
    out.push(`replica ${e.replica}#${e.incarnation} crashed (${e.code ?? e.signal}): ${e.logFile}`);
  for (const e of unexplainedLeaseLosses(r))
    out.push(`replica ${e.replica}#${e.incarnation} lost its lease outside an API outage`);
  if (r.kills.length !== r.options.kills)
    out.push(`${r.kills.length} kills, expected ${r.options.kills}`);
  if (r.outages.length !== OUTAGES.length)
    out.push(`${r.outages.length} outages, expected ${OUTAGES.length}`);
  const left = r.leftovers;
  if (left.vms !== 0) out.push(`${left.vms} VMs left after the cleanup`);
  if (left.isos !== 0) out.push(`${left.isos} boot ISOs left after the cleanup`);
  if (left.finalizersForced)
    out.push(`${left.finalizersForced} servers were not released; their finalizers were removed`);
  if (left.stopCodes.some((c) => c !== 0))
    out.push(`replicas exited ${left.stopCodes.join(", ")} on SIGTERM (expected 0)`);
  return out;
}

const s = (ms: number | undefined) => (ms === undefined ? "never" : `${(ms / 1000).toFixed(1)} s`);
const ok = (good: boolean) => (good ? "ok" : "VIOLATED");
const counts = (c: Record<string, number>) =>
  Object.entries(c)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}×${v}`)
    .join(", ") || "none";

export function formatReport(r: ChaosReport): string {
  const o = r.options;
  const lines: string[] = [];
  const p = (line = "") => lines.push(line);
  p(
    `vsop chaos: N=${o.servers} servers (${counts(r.methods)}), 2 replicas with --leader-elect ` +
      `(lease ${o.leaseSeconds} s), private vcsim`,
  );
  p(`  faults for ${s(r.campaignMs)}; all Ready ${s(r.convergedMs)} after the last fault`);
  p("Faults");
  const aimed: Record<string, number> = {};
  const during: Record<string, number> = {};
  for (const k of r.kills) {
    const key = k.aim === "random" ? "random moment" : `mid-${k.aim}${k.hit ? "" : " (missed)"}`;
    aimed[key] = (aimed[key] ?? 0) + 1;
    for (const st of k.stages) during[st] = (during[st] ?? 0) + 1;
    if (!k.stages.length) during.idle = (during.idle ?? 0) + 1;
  }
  p(`  SIGKILLs of the leader: ${r.kills.length} (aimed: ${counts(aimed)})`);
  p(`    stages in flight at the kills: ${counts(during)}`);
  p(`  servers deleted (finalizer) and created again meanwhile: ${r.recreated}`);
  p(`  outages of ${o.outageSeconds} s, each:     re-converged after   errors shown meanwhile`);
  for (const x of r.outages)
    p(
      `    ${x.label.padEnd(30)} ${(x.reconvergedMs === undefined ? `> ${o.recoverySeconds} s` : s(x.reconvergedMs)).padStart(10)}         ${counts(x.errors)}`,
    );
  const exits: Record<string, number> = {};
  for (const e of r.exits) exits[e.cause] = (exits[e.cause] ?? 0) + 1;
  p(`  operator exits: ${counts(exits)}`);
  p("Invariants");
  const one = r.servers.filter((x) => x.vms === 1 && x.uuidMatches).length;
  const vmCounts: Record<string, number> = {};
  for (const x of r.servers) vmCounts[`${x.vms} VM`] = (vmCounts[`${x.vms} VM`] ?? 0) + 1;
  p(
    `  VMs per server (owner marker, instanceUUID):  ${counts(vmCounts)}; instanceUUID as recorded: ${one}/${r.servers.length}   ${ok(one === o.servers && r.servers.length === o.servers)}`,
  );
  p(
    `  orphaned VMs:                                 ${r.orphans.length}   ${ok(!r.orphans.length)}`,
  );
  const ready = r.servers.filter((x) => x.ready).length;
  p(
    `  servers Ready:                                ${ready}/${o.servers}   ${ok(ready === o.servers)}`,
  );
  const perInstall: Record<string, number> = {};
  for (const x of r.puppetRuns)
    perInstall[`${x.runs} run`] = (perInstall[`${x.runs} run`] ?? 0) + 1;
  p(
    `  Puppet runs per server install:               ${counts(perInstall)}; duplicates ${duplicateRuns(r)}` +
      ` (${duplicatesAfterKill(r)} after a runonce whose sender was killed < 2 s later)   ${ok(duplicateRuns(r) === 0)}`,
  );
  const crashes = r.exits.filter((e) => e.cause === "crash").length;
  const lost = unexplainedLeaseLosses(r).length;
  p(
    `  operator crashes other than the kills:        ${crashes} (lease lost outside API outages: ${lost})   ${ok(!crashes && !lost)}`,
  );
  const l = r.leftovers;
  p(
    `  after cleanup: VMs ${l.vms}, ISOs ${l.isos}, finalizers forced ${l.finalizersForced}, exit codes on SIGTERM ${l.stopCodes.join(",")}   ${ok(!l.vms && !l.isos && !l.finalizersForced && l.stopCodes.every((c) => c === 0))}`,
  );
  p("Other figures");
  const rss = Object.entries(r.rssMiB).map(([k, v]) => `replica ${k} ${v} MiB`);
  p(`  operator RSS at the end: ${rss.join(", ") || "unknown"}`);
  p(`  boot ISOs on the datastore once all were Ready: ${r.isosWhenReady}`);
  p(
    `  installer attempts: ${r.guest.attempts}; failed and retried: ${counts(r.guest.failures)}; key bundles lost: ${r.guest.keysLost}   ${ok(!r.guest.keysLost)}`,
  );
  p(
    `  vSphere tasks started again for one server and operation: ${r.repeatedTasks.length ? r.repeatedTasks.join(", ") : "none"}`,
  );
  p(`  operator output lines that are not log records: ${r.strayLines.length}`);
  for (const line of r.strayLines.slice(0, 5)) p(`    ${line.slice(0, 160)}`);
  return lines.join("\n");
}

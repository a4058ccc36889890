// `make bench [N=50]`: N VirtualServers against vcsim through the operator (node dist/main.js run),
// measured from the operator's own /metrics and the API server's audit log:
//   1. time until all are VMCreated=True (and Ready), vSphere SOAP requests by method;
//   2. a resync of the N converged objects over 3 resync periods: SOAP requests by method, kube
//      requests by verb, and the audit log's writes (target: zero writes, reads that do not grow
//      with N);
//   3. delete them all and wait until vSphere has no VM of theirs.
// It prints figures and asserts nothing.
//
// The VMs live in a private vcsim started here (the stack's vcsim binary, certificate and port
// groups), so the figures are this operator's alone and a burst of N creates cannot disturb
// other users of the stack's vcsim. The servers' MCollective side is played by a small fleet in
// this process that answers puppet#runonce and puppet#last_run_summary for their identities,
// signed with the stack's server key as mcollectived would (running N real mcollectived is too
// heavy for a bench; test/support/fleet.ts). Class: boot method guestinfo with boot.assumeInstalled.
import type { ChildProcess } from "node:child_process";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import * as yaml from "js-yaml";
import {
  auditEvents,
  createNamespace,
  installVsop,
  kubectl,
  kubectlTry,
  scrape,
  startOperator,
  waitFor,
  WRITE_VERBS,
  type Operator,
} from "../test/support/harness.js";
import {
  mcollectiveSecrets,
  vcenterSecret,
  virtualServer,
  virtualServerClass,
} from "../test/support/fixtures.js";
import { govc } from "../test/support/govc.js";
import { stackEnv } from "../test/support/env.js";
import { privateVcsim } from "../test/support/vcsim.js";
import { startFleet } from "../test/support/fleet.js";

const N = Number(process.env.N ?? 50);
const RESYNC_SECONDS = Number(process.env.BENCH_RESYNC_SECONDS ?? 10);
const WINDOW_PERIODS = 3;
if (!Number.isInteger(N) || N < 1 || N > 1000) throw new Error(`N=${process.env.N}: 1 to 1000`);

const hostname = (i: number) => `bench-prod-${i}.example.test`;
/** VLAN-30 addresses: 10.12.30.100-254, then 10.13.30.1-254, 10.14.30.1-254, … (third octet 30). */
function address(i: number): string {
  if (i < 155) return `10.12.30.${100 + i}`;
  const j = i - 155;
  return `10.${13 + Math.floor(j / 254)}.30.${(j % 254) + 1}`;
}

const log = (msg: string) =>
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

// --- metrics ---------------------------------------------------------------------------------

type Counts = Record<string, number>;

/** A counter's samples by one label, e.g. SOAP requests by method. */
function byLabel(body: string, name: string, label: string): Counts {
  const out: Counts = {};
  const re = new RegExp(`^${name}\\{([^}]*)\\}\\s+([0-9.eE+-]+)$`);
  for (const line of body.split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    const v = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1] ?? "";
    out[v] = (out[v] ?? 0) + Number(m[2]);
  }
  return out;
}

function diff(after: Counts, before: Counts): Counts {
  const out: Counts = {};
  for (const [k, v] of Object.entries(after))
    if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

const total = (c: Counts) => Object.values(c).reduce((a, b) => a + b, 0);

function table(title: string, c: Counts): void {
  console.log(`  ${title}: ${total(c)}`);
  for (const [k, v] of Object.entries(c).sort((a, b) => b[1] - a[1]))
    console.log(`    ${k.padEnd(34)} ${String(v).padStart(7)}`);
}

interface Snapshot {
  soap: Counts;
  kube: Counts;
  mco: Counts;
  reconciles: Counts;
}

async function snapshot(op: Operator): Promise<Snapshot> {
  const { body } = await scrape(op.metricsPort);
  return {
    soap: byLabel(body, "vsop_vsphere_soap_requests_total", "method"),
    kube: byLabel(body, "vsop_kube_requests_total", "verb"),
    mco: byLabel(body, "vsop_mcollective_requests_total", "action"),
    reconciles: byLabel(body, "vsop_reconciles_total", "outcome"),
  };
}

// --- a private vcsim -------------------------------------------------------------------------

interface Vcsim {
  proc: ChildProcess;
  url: string;
  password: string;
  env: Record<string, string>;
}

async function startVcsim(): Promise<Vcsim> {
  const vc = await privateVcsim();
  return { proc: await vc.start(), url: vc.url, password: vc.password, env: vc.env };
}

function benchVMs(vc: Vcsim): string[] {
  return govc(["find", "/", "-type", "m", "-name", "bench-prod-*"], vc.env)
    .split("\n")
    .filter(Boolean);
}

// --- DNS, in one write ---------------------------------------------------------------------------

function reloadDNS(): void {
  process.kill(Number(readFileSync(stackEnv("VSOP_DNS_PIDFILE"), "utf8").trim()), "SIGHUP");
}

function addRecords(lines: string[]): void {
  appendFileSync(stackEnv("VSOP_DNS_HOSTS_FILE"), lines.map((l) => `${l}\n`).join(""));
  reloadDNS();
}

function removeRecords(names: Set<string>): void {
  const file = stackEnv("VSOP_DNS_HOSTS_FILE");
  const kept = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => !names.has(l.trim().split(/\s+/)[1] ?? ""));
  writeFileSync(file, kept.join("\n"));
  reloadDNS();
}

// --- the run -------------------------------------------------------------------------------------

interface Progress {
  name: string;
  vmCreated: boolean;
  ready: boolean;
}

/** Each server's VMCreated and Ready, read lean (N full objects overflow a pipe buffer). */
function servers(ns: string): Progress[] {
  const cond = (t: string) => `{.status.conditions[?(@.type=="${t}")].status}`;
  const out = kubectl([
    ...["-n", ns, "get", "virtualservers", "-o"],
    `jsonpath={range .items[*]}{.metadata.name} ${cond("VMCreated")} ${cond("Ready")}{"\\n"}{end}`,
  ]);
  return out
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => {
      const [name, vmCreated, ready] = l.split(" ");
      return { name: name!, vmCreated: vmCreated === "True", ready: ready === "True" };
    });
}

async function main(): Promise<void> {
  const started = Date.now();
  installVsop();
  const ns = createNamespace("bench");
  const id = ns.slice("bench-".length);
  const cls = `bench-${id}`;
  const secret = `bench-vcsim-${id}`;
  const names = new Set(Array.from({ length: N }, (_, i) => hostname(i)));
  let vc: Vcsim | undefined;
  let op: Operator | undefined;
  let fleet: Awaited<ReturnType<typeof startFleet>> | undefined;
  try {
    vc = await startVcsim();
    log(`private vcsim at ${vc.url}; namespace ${ns}; N=${N}; resync period ${RESYNC_SECONDS}s`);
    kubectl(
      ["apply", "-f", "-"],
      [
        vcenterSecret(vc.password, secret),
        ...mcollectiveSecrets(),
        virtualServerClass(cls, {
          vcenter: { url: vc.url, credentialsSecret: secret },
          boot: { method: "guestinfo", assumeInstalled: true },
        }),
      ]
        .map((o) => yaml.dump(o))
        .join("---\n"),
    );
    addRecords(Array.from({ length: N }, (_, i) => `${address(i)} ${hostname(i)}`));
    fleet = await startFleet([...names]);
    op = startOperator(`bench-${id}`, [
      ...["--label-selector", `vsop-bench=${id}`, "--resync-period", `${RESYNC_SECONDS}s`],
      ...["--log-level", "info"],
    ]);
    const o = op;
    await waitFor(
      "operator ready",
      async () => (await scrape(o.healthPort, "/readyz")).status === 200,
      30_000,
    );

    // 1. create N -------------------------------------------------------------------------------
    const s0 = await snapshot(op);
    const t0 = Date.now();
    kubectl(
      ["apply", "-f", "-"],
      Array.from({ length: N }, (_, i) =>
        yaml.dump(virtualServer(ns, `bench-${i}`, hostname(i), cls, { "vsop-bench": id })),
      ).join("---\n"),
    );
    const applied = Date.now() - t0;
    let tCreated = 0;
    let tReady = 0;
    let lastReport = 0;
    const deadline = Date.now() + Math.max(300_000, N * 6_000);
    while (!tReady) {
      const list = servers(ns);
      const created = list.filter((v) => v.vmCreated).length;
      const ready = list.filter((v) => v.ready).length;
      if (!tCreated && created === N) tCreated = Date.now() - t0;
      if (ready === N) tReady = Date.now() - t0;
      if (Date.now() - lastReport > 10_000) {
        log(
          `${created}/${N} VMCreated, ${ready}/${N} Ready after ${((Date.now() - t0) / 1000).toFixed(0)} s`,
        );
        lastReport = Date.now();
      }
      if (Date.now() > deadline)
        throw new Error(`not converged: ${created}/${N} VMCreated, ${ready}/${N} Ready`);
      if (!tReady) await sleep(250);
    }
    const s1 = await snapshot(op);
    const vms = benchVMs(vc).length;

    // 2. a resync of N converged objects --------------------------------------------------------
    await sleep(2000); // the last requeues of the create phase
    const s2 = await snapshot(op);
    const since = new Date();
    const replies0 = fleet.replies();
    await sleep(WINDOW_PERIODS * RESYNC_SECONDS * 1000);
    const s3 = await snapshot(op);
    const audit = auditEvents(since).filter(
      (e) =>
        e.objectRef?.namespace === ns || e.objectRef?.name === cls || e.objectRef?.name === secret,
    );
    const auditWrites = audit.filter((e) => WRITE_VERBS.has(e.verb));
    const auditBy = (events: typeof audit): Counts => {
      const c: Counts = {};
      for (const e of events) {
        const k = `${e.verb} ${e.objectRef?.resource ?? "?"}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ""}`;
        c[k] = (c[k] ?? 0) + 1;
      }
      return c;
    };

    // 3. delete N -------------------------------------------------------------------------------
    const t4 = Date.now();
    kubectl(["-n", ns, "delete", "virtualservers", "--all", "--wait=false"]);
    await waitFor("all released", () => servers(ns).length === 0, Math.max(300_000, N * 6_000));
    const tReleased = Date.now() - t4;
    const left = benchVMs(vc).length;
    const s5 = await snapshot(op);

    // --- report ----------------------------------------------------------------------------------
    const create = diff(s1.soap, s0.soap);
    const resync = diff(s3.soap, s2.soap);
    console.log("");
    console.log(
      `vsop bench: N=${N} VirtualServers, private vcsim, default workers, resync period ${RESYNC_SECONDS}s`,
    );
    console.log(`  kubectl apply of N objects:      ${(applied / 1000).toFixed(1)} s`);
    console.log(`  all VMCreated=True after:        ${(tCreated / 1000).toFixed(1)} s`);
    console.log(`  all Ready=True after:            ${(tReady / 1000).toFixed(1)} s`);
    console.log(`  VMs in vcsim (govc):             ${vms}`);
    console.log("");
    console.log("Create phase (until all Ready):");
    table("vSphere SOAP requests", create);
    console.log(`    per server: ${(total(create) / N).toFixed(1)}`);
    table("kube API requests by verb", diff(s1.kube, s0.kube));
    table("MCollective requests by action", diff(s1.mco, s0.mco));
    table("reconciles by outcome", diff(s1.reconciles, s0.reconciles));
    console.log("");
    console.log(
      `Resync of ${N} converged objects, ${WINDOW_PERIODS} periods (${WINDOW_PERIODS * RESYNC_SECONDS} s):`,
    );
    table("reconciles by outcome", diff(s3.reconciles, s2.reconciles));
    table("vSphere SOAP requests", resync);
    table("kube API requests by verb (operator metrics)", diff(s3.kube, s2.kube));
    table("audit log: operator requests on this bench's objects", auditBy(audit));
    console.log(`  audit log: write calls: ${auditWrites.length}`);
    table("MCollective requests by action", diff(s3.mco, s2.mco));
    console.log(`  fleet replies in the window: ${fleet.replies() - replies0}`);
    console.log("");
    console.log("Delete phase:");
    console.log(`  all released after:              ${(tReleased / 1000).toFixed(1)} s`);
    console.log(`  VMs left in vcsim (govc):        ${left}`);
    table("vSphere SOAP requests", diff(s5.soap, s3.soap));
    console.log("");
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    // Whatever happened, leave nothing behind: objects, operator, fleet, vcsim, DNS records.
    if (kubectlTry(["-n", ns, "get", "virtualservers", "-o", "name"]).out.trim()) {
      kubectl(["-n", ns, "delete", "virtualservers", "--all", "--wait=false"]);
      const released = await waitFor("released", () => servers(ns).length === 0, 120_000).catch(
        () => false,
      );
      if (!released) {
        log("objects not released in time; removing their finalizers");
        for (const vs of servers(ns))
          kubectlTry([
            ...["-n", ns, "patch", "virtualserver", vs.name, "--type=merge"],
            ...["-p", '{"metadata":{"finalizers":[]}}'],
          ]);
      }
    }
    if (op) await op.stop();
    await fleet?.stop();
    if (vc && vc.proc.exitCode === null && vc.proc.signalCode === null) {
      vc.proc.kill("SIGTERM");
      await once(vc.proc, "exit");
    }
    removeRecords(names);
    kubectlTry(["delete", "virtualserverclass", cls, "--ignore-not-found"]);
    kubectlTry(["-n", "vsop-system", "delete", "secret", secret, "--ignore-not-found"]);
    kubectlTry(["delete", "namespace", ns, "--wait=false"]);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);

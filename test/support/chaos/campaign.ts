// The chaos campaign behind `make chaos` and test/e2e/chaos.test.ts: N servers through the whole
// workflow (network, iso and guestinfo installs, Puppet, deletes) on the real stack, while the
// leading operator is SIGKILLed at aimed moments and vCenter, the API server, the broker and DNS
// go away in turn; two replicas run with --leader-elect throughout. Then it checks what must
// hold (report.ts) and removes everything it made.
//
// Only this campaign's operators see the outages: its vCenter is a private vcsim (SIGSTOPped),
// and they reach the shared API server, broker and dnsmasq through proxies it owns (proxy.ts).
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as yaml from "js-yaml";
import { API_VERSION, VS_PLURAL } from "../../../src/api/types.js";
import { Kube } from "../../../src/controller/kube.js";
import { loadClusterAccess } from "../../../src/controller/kubeconfig.js";
import { stackEnv } from "../env.js";
import { startFleet, type Fleet } from "../fleet.js";
import {
  mcollectiveSecrets,
  vcenterSecret,
  virtualServer,
  virtualServerClass,
} from "../fixtures.js";
import { extraConfig, govc, type GovcVM } from "../govc.js";
import {
  addDNSRecords,
  createNamespace,
  installVsop,
  kubectl,
  kubectlTry,
  OPERATOR_NS,
  operatorKubeconfig,
  removeDNSNames,
  startOperator,
  type VS,
} from "../harness.js";
import { DnsForwarder, TcpProxy } from "../proxy.js";
import { privateVcsim } from "../vcsim.js";
import { Guests, type BootMethodName } from "./guest.js";
import { Observer, readyOf, type Stage } from "./observe.js";
import { leader, Replica, strayLines, type Exit } from "./replicas.js";

export interface ChaosOptions {
  servers: number;
  kills: number;
  outageSeconds: number;
  /** Pause between two outages. */
  outageGapSeconds: number;
  leaseSeconds: number;
  /** The servers are created one by one over this long. */
  createSpreadSeconds: number;
  /** How long the next outage waits for the last one to re-converge, at most. */
  recoverySeconds: number;
  /** How long a kill waits for its stage to be in flight before it strikes anyway. */
  aimSeconds: number;
  convergeTimeoutSeconds: number;
  log: (msg: string) => void;
}

export const OUTAGES = [
  { kind: "vcenter", label: "vCenter stopped (SIGSTOP)" },
  { kind: "apiRefused", label: "API server refusing" },
  { kind: "brokerRefused", label: "broker refusing" },
  { kind: "dns", label: "DNS silent" },
  { kind: "apiStalled", label: "API server stalled" },
  { kind: "brokerStalled", label: "broker stalled" },
] as const;
export type OutageKind = (typeof OUTAGES)[number]["kind"];

export interface OutageRecord {
  kind: OutageKind;
  label: string;
  start: number;
  end: number;
  /** Error reasons servers began to show from its start until it re-converged, by count. */
  errors: Record<string, number>;
  /**
   * From its end until no server showed an error and one had moved on (or all were Ready);
   * unset: not within recoverySeconds.
   */
  reconvergedMs?: number;
}

export type Aim = Stage | "random";

export interface KillRecord {
  at: number;
  aim: Aim;
  /** Whether the aimed stage was in flight when the kill struck. */
  hit: boolean;
  replica: string;
  stages: Stage[];
}

export interface ServerCheck {
  name: string;
  uid: string;
  ready: boolean;
  reason?: string;
  /** VMs in vCenter whose owner marker is this server's UID. */
  vms: number;
  /** Whether that VM's instanceUUID is the one in status.vm.instanceUUID. */
  uuidMatches: boolean;
}

export interface ChaosReport {
  options: Omit<ChaosOptions, "log">;
  methods: Record<BootMethodName, number>;
  campaignMs: number;
  /** From the last fault (kill or outage end) until every server was Ready; unset: never. */
  convergedMs?: number;
  kills: KillRecord[];
  recreated: number;
  outages: OutageRecord[];
  exits: Exit[];
  servers: ServerCheck[];
  orphans: string[];
  /** ISO files of this campaign on the datastore once all were Ready (handoff deletes them). */
  isosWhenReady: number;
  /** runonce requests per server install (identity and which install of it). */
  puppetRuns: { identity: string; generation: number; runs: number; at: number[] }[];
  strayLines: string[];
  /**
   * vSphere tasks started more often for one server and operation than the server was created
   * (e.g. "chaos-0 FinishVM×2"): harmless for idempotent changes, but each is work done twice.
   */
  repeatedTasks: string[];
  rssMiB: Record<string, number>;
  guest: { attempts: number; failures: Record<string, number>; keysLost: number };
  leftovers: { vms: number; isos: number; finalizersForced: number; stopCodes: (number | null)[] };
}

/** Task delays for the private vcsim, so that a kill can land while a task runs. */
const VCSIM_DELAYS =
  "CreateVm:2000,ReconfigVm:500,PowerOn:500,PowerOff:500,Destroy:1000,LockHandoff:0";
const METHODS: BootMethodName[] = ["network", "iso", "guestinfo"];
const AIMS: Aim[] = ["create", "upload", "handoff", "puppet", "finalizer", "random"];
const random = (min: number, max: number) => min + Math.random() * (max - min);

interface OwnedVM {
  name: string;
  uuid: string;
  owner?: string;
}

function vcenterVMs(env: Record<string, string>): OwnedVM[] {
  const paths = govc(["find", "/", "-type", "m"], env).split("\n").filter(Boolean);
  if (!paths.length) return [];
  const out = JSON.parse(govc(["vm.info", "-json", "-e", ...paths], env)) as {
    virtualMachines?: GovcVM[] | null;
  };
  return (out.virtualMachines ?? []).map((vm) => ({
    name: vm.name,
    uuid: vm.config.instanceUuid,
    owner: extraConfig(vm)["vsop.owner-uid"] || undefined,
  }));
}

function isoFiles(env: Record<string, string>, prefix: string): string[] {
  try {
    return govc(["datastore.ls", "-ds", "LocalDS_0", "vsop"], env)
      .split("\n")
      .filter((f) => f.startsWith(prefix));
  } catch {
    return []; // no vsop/ folder: no ISO was ever uploaded
  }
}

/** Operations started more often per server than it was created, from the operators' logs. */
function repeatedTasks(logFiles: string[], incarnations: Map<string, number>): string[] {
  const starts = new Map<string, number>();
  for (const file of logFiles)
    for (const line of readFileSync(file, "utf8").split("\n")) {
      if (!line.includes('"msg":"vSphere task started"')) continue;
      const rec = JSON.parse(line) as { virtualserver?: string; operation?: string };
      const k = `${rec.virtualserver?.split("/")[1]} ${rec.operation}`;
      starts.set(k, (starts.get(k) ?? 0) + 1);
    }
  return [...starts]
    .filter(([k, n]) => n > (incarnations.get(k.split(" ")[0]!) ?? 1))
    .map(([k, n]) => `${k}×${n}`);
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const t0 = Date.now();
  const { log, ...options } = o;
  installVsop();
  const ns = createNamespace("chaos");
  const id = ns.slice("chaos-".length);
  const admin = new Kube(await loadClusterAccess(stackEnv("KUBECONFIG")));
  const vsPath = `/apis/${API_VERSION}/namespaces/${ns}/${VS_PLURAL}`;
  const prefix = `chaos-r${id}-`;
  const hostname = (i: number) => `${prefix}${i}.example.test`;
  const className = (m: BootMethodName) => `chaos-${id}-${m}`;
  const methodOf = (vs: VS) => METHODS.find((m) => vs.spec.className === className(m)) ?? "network";
  const secret = `chaos-vcsim-${id}`;
  const lease = `chaos-${id}`;
  const hostnames = Array.from({ length: o.servers }, (_, i) => hostname(i));
  const objects = hostnames.map((h, i) =>
    virtualServer(ns, `chaos-${i}`, h, className(METHODS[i % METHODS.length]!), {
      "vsop-chaos": id,
    }),
  );
  const report: ChaosReport = {
    options,
    methods: { network: 0, iso: 0, guestinfo: 0 },
    campaignMs: 0,
    kills: [],
    recreated: 0,
    outages: [],
    exits: [],
    servers: [],
    orphans: [],
    isosWhenReady: 0,
    puppetRuns: [],
    strayLines: [],
    repeatedTasks: [],
    rssMiB: {},
    guest: { attempts: 0, failures: {}, keysLost: 0 },
    leftovers: { vms: 0, isos: 0, finalizersForced: 0, stopCodes: [] },
  };
  for (const [i] of hostnames.entries()) report.methods[METHODS[i % METHODS.length]!]++;

  const tmp = mkdtempSync(path.join(os.tmpdir(), "vsop-chaos-"));
  const replicas: Replica[] = [];
  const everUids = new Set<string>();
  const incarnations = new Map<string, number>();
  let stopping = false;
  let fleet: Fleet | undefined;
  let observer: Observer | undefined;
  let vcStopped = false;
  const vcsim = await privateVcsim(["-method-delay", VCSIM_DELAYS]);
  let vcProc: ChildProcess | undefined;
  const amqps = new URL(stackEnv("VSOP_AMQPS_URL"));
  const [dnsHost, dnsPort] = stackEnv("VSOP_DNS_SERVER").split(":");
  // Started in the try below; listening on their ports only from then.
  const api = new TcpProxy(() => [Number(new URL(admin.server).port)]);
  const broker = new TcpProxy(() => [Number(amqps.port)]);
  const provisioningPorts = () =>
    replicas.filter((r) => r.running()).map((r) => r.op!.provisioningPort);
  const provisioning = new TcpProxy(provisioningPorts);
  // The same, but every answer is lost on the way: some installers' first key fetch goes here.
  const lossy = new TcpProxy(provisioningPorts);
  lossy.holdNewReplies = true;
  const dns = new DnsForwarder({ host: dnsHost!, port: Number(dnsPort) });

  try {
    // --- setup -------------------------------------------------------------------------------
    vcProc = await vcsim.start();
    const vc = vcProc;
    await Promise.all([
      api.start(),
      broker.start(),
      provisioning.start(),
      lossy.start(),
      dns.start(),
    ]);
    log(`namespace ${ns}; private vcsim at ${vcsim.url}; N=${o.servers}, ${o.kills} kills`);
    kubectl(
      ["apply", "-f", "-"],
      [
        vcenterSecret(vcsim.password, secret),
        ...mcollectiveSecrets(),
        ...METHODS.map((m) =>
          virtualServerClass(className(m), {
            vcenter: { url: vcsim.url, credentialsSecret: secret },
            naming: { dnsServers: [`127.0.0.1:${dns.port}`] },
            boot: { method: m, installTimeout: "15m" },
            mcollective: { brokerURL: `amqps://127.0.0.1:${broker.port}/` },
          }),
        ),
      ]
        .map((x) => yaml.dump(x))
        .join("---\n"),
    );
    addDNSRecords(hostnames.map((h, i) => [`10.77.30.${i + 1}`, h]));
    fleet = await startFleet();
    const kubeconfig = operatorKubeconfig({
      server: `https://127.0.0.1:${api.port}`,
      file: path.join(tmp, "operator.kubeconfig"),
    });
    const flags = [
      ...["--namespace", ns, "--label-selector", `vsop-chaos=${id}`],
      ...["--leader-elect", "--leader-election-id", lease],
      ...["--lease-duration", `${o.leaseSeconds}s`],
      ...["--provisioning-url", `http://127.0.0.1:${provisioning.port}`],
      ...["--log-level", "info"],
    ];
    for (const name of ["a", "b"]) {
      const r = new Replica(
        name,
        (n) => startOperator(`chaos-${id}-${n}`, flags, { kubeconfig }),
        (e) => {
          report.exits.push(e);
          if (e.cause !== "killed" && e.cause !== "stopped")
            log(`replica ${e.replica}#${e.incarnation} exited: ${e.cause} (${e.code ?? e.signal})`);
        },
      );
      replicas.push(r);
      r.start();
    }
    if (!(await leader(replicas, 90_000))) throw new Error("no replica became leader in 90 s");
    const obs = new Observer(admin, vsPath);
    observer = obs;
    await obs.start();
    const guests = new Guests({
      provisioningPort: provisioning.port,
      lossyProvisioningPort: lossy.port,
      vcEnv: vcsim.env,
      fleet,
    });
    const f = fleet;

    // --- the campaign --------------------------------------------------------------------------
    const tCampaign = Date.now();
    let lastFaultAt = tCampaign;
    let created = 0;
    const recreating = new Set<string>();

    const creator = (async () => {
      for (const [i, obj] of objects.entries()) {
        if (stopping) return;
        await admin.create(vsPath, obj);
        incarnations.set(obj.metadata.name, 1);
        created = i + 1;
        await sleep((o.createSpreadSeconds * 1000) / o.servers);
      }
    })();

    const guestLoop = (async () => {
      while (!stopping) {
        for (const vs of obs.servers) everUids.add(vs.metadata.uid);
        guests.tick(obs.servers, methodOf, 2, new Set(vcStopped ? ["iso", "guestinfo"] : []));
        await sleep(500);
      }
    })();

    /**
     * Deletes a server (its finalizer runs) and creates it again once it is gone, so that the
     * stages come round again: a Ready one when there is one, of `method` when given.
     */
    const recreateOne = (method?: BootMethodName): boolean => {
      const free = obs.servers.filter(
        (vs) =>
          !vs.metadata.deletionTimestamp &&
          !recreating.has(vs.metadata.name) &&
          (!method || methodOf(vs) === method),
      );
      const ready = free.filter(readyOf);
      const candidates = ready.length ? ready : free;
      const vs = candidates[Math.floor(Math.random() * candidates.length)];
      if (!vs) return false;
      const name = vs.metadata.name;
      const obj = objects.find((x) => x.metadata.name === name)!;
      recreating.add(name);
      report.recreated++;
      void (async () => {
        try {
          await admin.delete(`${vsPath}/${name}`);
          while (obs.servers.some((x) => x.metadata.name === name)) await sleep(250);
          await admin.create(vsPath, obj);
          incarnations.set(name, (incarnations.get(name) ?? 0) + 1);
        } catch (err) {
          log(`recreating ${name} failed: ${String(err)}`);
        } finally {
          recreating.delete(name);
        }
      })();
      return true;
    };

    /** Resolves once `aim` is in flight (true) or after aimSeconds (false). */
    const aimAt = async (aim: Stage, strike: () => void): Promise<boolean> => {
      const deadline = Date.now() + o.aimSeconds * 1000;
      if (aim === "puppet") {
        // At the moment a runonce reaches the server: before vsop has recorded it.
        return new Promise((resolve) => {
          const timer = setTimeout(() => {
            f.onRunonce = undefined;
            resolve(false);
          }, o.aimSeconds * 1000);
          f.onRunonce = () => {
            f.onRunonce = undefined;
            clearTimeout(timer);
            strike();
            resolve(true);
          };
        });
      }
      while (Date.now() < deadline) {
        if (obs.inFlight(aim)) {
          // Somewhere inside the stage, not always at its first instant.
          if (aim === "create" || aim === "finalizer") await sleep(random(0, 1200));
          return obs.inFlight(aim);
        }
        await sleep(50);
      }
      return false;
    };

    const killer = (async () => {
      let k = 0;
      let leaderless = 0;
      while (k < o.kills && !stopping) {
        const aim = AIMS[k % AIMS.length]!;
        const lead = await leader(replicas, (o.leaseSeconds * 4 + o.outageSeconds) * 1000);
        if (!lead) {
          if (++leaderless === 3) throw new Error("no replica has led for three long waits");
          log("no leader for a long while; waiting again");
          continue;
        }
        leaderless = 0;
        // Work for the aim: a delete for the finalizer; a server coming round again for a stage
        // nobody is in (an iso one for the upload).
        if (aim === "finalizer") recreateOne();
        else if (
          aim !== "random" &&
          !obs.inFlight(aim) &&
          recreating.size < 2 &&
          created === o.servers
        )
          recreateOne(aim === "upload" ? "iso" : undefined);
        let struck = false;
        const strike = () => {
          struck = true;
          lead.kill();
        };
        let hit = false;
        if (aim === "random") await sleep(random(0, 3000));
        else hit = await aimAt(aim, strike);
        if (!struck) {
          if (!(await lead.leading())) continue; // it lost the lease meanwhile: aim again
          strike();
        }
        report.kills.push({
          at: Date.now(),
          aim,
          hit,
          replica: lead.name,
          stages: obs.stagesNow(),
        });
        lastFaultAt = Date.now();
        k++;
        log(`kill ${k}/${o.kills}: ${lead.name} (aimed at ${aim}${hit ? "" : ", missed"})`);
        await sleep(random(500, 1500));
      }
    })();

    const outages = (async () => {
      await sleep((o.createSpreadSeconds * 1000) / 3);
      for (const [i, { kind, label }] of OUTAGES.entries()) {
        if (stopping) return;
        if (i) await sleep(o.outageGapSeconds * 1000);
        const rec: OutageRecord = { kind, label, start: Date.now(), end: 0, errors: {} };
        log(`outage: ${label} for ${o.outageSeconds} s`);
        if (kind === "vcenter") {
          vcStopped = true;
          vc.kill("SIGSTOP");
        } else if (kind === "apiRefused") await api.refuse();
        else if (kind === "apiStalled") api.stall();
        else if (kind === "brokerRefused") await broker.refuse();
        else if (kind === "brokerStalled") broker.stall();
        else dns.dropping = true;
        await sleep(o.outageSeconds * 1000);
        if (kind === "vcenter") {
          vc.kill("SIGCONT");
          vcStopped = false;
        } else if (kind.startsWith("api")) await api.resume();
        else if (kind.startsWith("broker")) await broker.resume();
        else dns.dropping = false;
        rec.end = Date.now();
        lastFaultAt = rec.end;
        report.outages.push(rec);
        // The next outage waits until this one re-converged (or recoverySeconds passed), so
        // each time to re-converge is its own.
        const giveUp = rec.end + o.recoverySeconds * 1000;
        while (!stopping && Date.now() < giveUp) {
          const allReady = obs.servers.length > 0 && obs.servers.every(readyOf);
          if (!obs.erroring().length && (obs.lastProgressAt > rec.end || allReady)) {
            rec.reconvergedMs = Date.now() - rec.end;
            break;
          }
          await sleep(250);
        }
        const until = rec.reconvergedMs === undefined ? Date.now() : rec.end + rec.reconvergedMs;
        for (const e of obs.errorsSeen)
          if (e.at >= rec.start && e.at <= until)
            rec.errors[e.reason] = (rec.errors[e.reason] ?? 0) + 1;
      }
    })();

    // A loop that fails stops the others (they look at `stopping`) before its error is thrown.
    let failed: unknown;
    await Promise.all(
      [creator, killer, outages].map((loop) =>
        loop.catch((err: unknown) => {
          failed ??= err;
          stopping = true;
        }),
      ),
    );
    if (failed) throw failed;
    report.campaignMs = Date.now() - tCampaign;
    log(`faults done after ${(report.campaignMs / 1000).toFixed(0)} s; waiting for all Ready`);
    const deadline = Date.now() + o.convergeTimeoutSeconds * 1000;
    for (;;) {
      const list = obs.servers;
      if (
        created === o.servers &&
        !recreating.size &&
        list.length === o.servers &&
        list.every((vs) => readyOf(vs) && !vs.metadata.deletionTimestamp)
      ) {
        report.convergedMs = Date.now() - lastFaultAt;
        break;
      }
      if (Date.now() > deadline) {
        log("not all Ready in time");
        break;
      }
      await sleep(250);
    }
    await sleep(1000); // late reconciles of the last run, for the figures below

    // --- checks ------------------------------------------------------------------------------
    const list = (await admin.get<{ items: VS[] }>(vsPath)).items;
    const vms = vcenterVMs(vcsim.env);
    const live = new Set(list.map((vs) => vs.metadata.uid));
    for (const vs of list) {
      const mine = vms.filter((v) => v.owner === vs.metadata.uid);
      const want = (vs.status?.vm as { instanceUUID?: string } | undefined)?.instanceUUID;
      report.servers.push({
        name: vs.metadata.name,
        uid: vs.metadata.uid,
        ready: readyOf(vs),
        reason: vs.status?.conditions?.find((c) => c.type === "Ready")?.reason,
        vms: mine.length,
        uuidMatches: mine.length === 1 && mine[0]!.uuid === want,
      });
    }
    report.orphans = vms
      .filter((v) => (v.owner && !live.has(v.owner)) || (!v.owner && v.name.startsWith(prefix)))
      .map((v) => `${v.name} (owner ${v.owner ?? "none"})`);
    report.isosWhenReady = isoFiles(vcsim.env, prefix).length;
    const runs = new Map<string, ChaosReport["puppetRuns"][number]>();
    for (const r of f.runs) {
      const k = `${r.identity}#${r.generation}`;
      const e = runs.get(k) ?? { identity: r.identity, generation: r.generation, runs: 0, at: [] };
      e.runs++;
      e.at.push(r.at);
      runs.set(k, e);
    }
    report.puppetRuns = [...runs.values()];
    for (const r of replicas) {
      const rss = await r.rssBytes().catch(() => undefined);
      if (rss) report.rssMiB[r.name] = Math.round(rss / 1024 / 1024);
    }
    report.guest = {
      attempts: guests.attempts,
      failures: guests.failures,
      keysLost: guests.keysLost.size,
    };
    stopping = true;
    await guestLoop;
    return report;
  } finally {
    // --- leave nothing behind --------------------------------------------------------------
    stopping = true;
    if (fleet) fleet.onRunonce = undefined;
    const tClean = Date.now();
    if (vcStopped) vcProc?.kill("SIGCONT");
    await api.resume();
    await broker.resume();
    dns.dropping = false;
    for (const vs of observer?.servers ?? []) everUids.add(vs.metadata.uid);
    await observer?.stop();
    // The operators delete the VMs (finalizers); a leader is there within a lease duration.
    const names = async () =>
      (await admin.get<{ items: VS[] }>(vsPath).catch(() => ({ items: [] as VS[] }))).items.map(
        (vs) => vs.metadata.name,
      );
    for (const name of await names())
      await admin.delete(`${vsPath}/${name}`).catch(() => undefined);
    const until = Date.now() + 120_000 + o.servers * 3000;
    while ((await names()).length && Date.now() < until) await sleep(500);
    for (const name of await names()) {
      report.leftovers.finalizersForced++;
      await admin
        .mergePatch(`${vsPath}/${name}`, { metadata: { finalizers: null } })
        .catch(() => undefined);
    }
    try {
      report.leftovers.vms = vcenterVMs(vcsim.env).filter(
        (v) => (v.owner && everUids.has(v.owner)) || v.name.startsWith(prefix),
      ).length;
      report.leftovers.isos = isoFiles(vcsim.env, prefix).length;
    } catch (err) {
      log(`could not list what is left in vCenter: ${String(err)}`);
      report.leftovers.vms = -1;
    }
    for (const r of replicas) report.leftovers.stopCodes.push(await r.stop());
    const logFiles = replicas.flatMap((r) => r.logFiles);
    report.strayLines = logFiles.flatMap(strayLines);
    report.repeatedTasks = repeatedTasks(logFiles, incarnations);
    await fleet?.stop();
    await Promise.all([
      api.close(),
      broker.close(),
      provisioning.close(),
      lossy.close(),
      dns.close(),
    ]);
    vcProc?.kill("SIGTERM");
    removeDNSNames(hostnames);
    kubectlTry(["delete", "virtualserverclass", ...METHODS.map(className), "--ignore-not-found"]);
    kubectlTry(["-n", OPERATOR_NS, "delete", "secret", secret, "--ignore-not-found"]);
    kubectlTry(["-n", OPERATOR_NS, "delete", "lease", lease, "--ignore-not-found"]);
    kubectlTry(["delete", "namespace", ns, "--wait=false"]);
    rmSync(tmp, { recursive: true, force: true });
    log(
      `cleanup took ${((Date.now() - tClean) / 1000).toFixed(0)} s; whole run ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    );
  }
}

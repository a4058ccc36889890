// `make bench SCALE=10000`: how fast the operator is ready, and how much memory it holds, with
// SCALE VirtualServers (status included) in the stack's API server:
//   1. creates SCALE objects with a Ready server's status (conditions, vm, install, puppet) in a
//      namespace of their own, with bounded concurrency, as kubectl apply and vsop would leave
//      them (last-applied annotation, managedFields of both writers);
//   2. the floor, from this process: the same LIST from the API server's watch cache
//      (resourceVersion=0), as a consistent read (no resourceVersion), paged by 500 (etcd), as a
//      streaming list (a watch with sendInitialEvents=true) when the server allows it, and the
//      list shards' lists as vsop asks them (two at a time), plain and streamed;
//   3. the operator (node dist/main.js run --namespace NS, as the e2e harness runs it), twice:
//      a first start and a quiet restart. For each: time from spawn to its "caches synced" log
//      line, the CPU the operator and the API server used until then (/proc/PID/stat: on two
//      cores they share the machine, and the server's encoding bounds the sync), the API
//      server's garbage collections meanwhile (its /metrics; the summary parts the starts by
//      them), RSS (/proc/PID/status VmRSS, and the peak VmHWM) after sync and after the first
//      reconcile pass, and the writes it made to the namespace (the API server's audit log);
//   4. deletes the objects and the namespace.
// It prints figures and asserts nothing.
//
// The objects name a class that does not exist, and their status already says ClassNotFound
// exactly as vsop writes it (a Ready server whose class was deleted), so a reconcile reads the
// object and the class cache and writes nothing: the restart's writes must be zero.
//
// BASELINE=/path/to/other/dist/main.js runs that build's operator first, the same way, on the
// same objects (e.g. main's, to compare). SCALE_KEEP=1 leaves the objects (and prints the
// namespace); SCALE_NS=<namespace> reuses such a namespace instead of creating objects;
// SCALE_FLOOR=0 skips the floor's requests. ROUNDS=R runs each build's two starts R times,
// alternating builds, and prints each round and the range and median of each figure: one start's
// peak RSS moves by up to ~20 MiB with when V8 runs its first full collection after the lists.
import { execFileSync } from "node:child_process";
import https from "node:https";
import net from "node:net";
import { readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { serversPath } from "./bench-kube.js";
import { median } from "./bench-stats.js";
import {
  LIST_SHARD_LABEL,
  listShardOf,
  listShardSelectors,
  START_LISTS,
  START_LISTS_IN_FLIGHT,
} from "../src/api/list-shards.js";
import { API_VERSION } from "../src/api/types.js";
import { Kube } from "../src/controller/kube.js";
import { fromFile } from "../src/controller/kubeconfig.js";
import { scrub } from "../src/observability/redact.js";
import { stackEnv } from "../test/support/env.js";
import {
  auditEvents,
  createNamespace,
  installVsop,
  kubectlTry,
  metric,
  ROOT,
  scrape,
  startOperator,
  WRITE_VERBS,
  type Operator,
} from "../test/support/harness.js";

const SCALE = Number(process.env.SCALE ?? 10_000);
if (!Number.isInteger(SCALE) || SCALE < 1 || SCALE > 50_000)
  throw new Error(`SCALE=${process.env.SCALE}: 1 to 50000`);
const CONCURRENCY = 32;
const BASELINE = process.env.BASELINE;
const KEEP = process.env.SCALE_KEEP === "1";
const REUSE = process.env.SCALE_NS;
const FLOOR = process.env.SCALE_FLOOR !== "0";
const ROUNDS = Number(process.env.ROUNDS || 1);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 9)
  throw new Error(`ROUNDS=${process.env.ROUNDS}: 1 to 9`);

const log = (msg: string) =>
  console.log(`[bench-scale ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;

// --- the objects -------------------------------------------------------------------------------

const hostname = (i: number) => `scale-prod-${i}.example.test`;
const address = (i: number) => `10.${20 + Math.floor(i / 250)}.30.${(i % 250) + 2}`;
const hex = (n: number, width: number) => n.toString(16).padStart(width, "0").slice(-width);
const mac = (i: number, nic: number) =>
  `00:50:56:${hex(nic, 2)}:${hex(i >> 8, 2)}:${hex(i & 255, 2)}`;

function server(ns: string, id: string, cls: string, i: number) {
  const applied = {
    apiVersion: API_VERSION,
    kind: "VirtualServer",
    metadata: { name: `scale-${i}`, namespace: ns, labels: { "vsop-bench-scale": id } },
    spec: { hostname: hostname(i), className: cls, cpus: 2, memoryMiB: 4096, diskGiB: 40 },
  };
  return {
    ...applied,
    metadata: {
      ...applied.metadata,
      annotations: {
        "kubectl.kubernetes.io/last-applied-configuration": `${JSON.stringify(applied)}\n`,
      },
      labels: {
        ...applied.metadata.labels,
        "provisioning.vsop.dev/apptype": "scale",
        "provisioning.vsop.dev/environment": "prod",
        "provisioning.vsop.dev/instance": String(i),
        [LIST_SHARD_LABEL]: listShardOf(`scale-${i}`),
      },
    },
  };
}

/** A network-booted server that was Ready, then its class was deleted: as vsop writes it. */
function status(cls: string, i: number) {
  // Each server installed at its own time, as in a fleet: no two share a timestamp, so values
  // repeat across objects only where they would in a real one.
  const t = (s: number) => new Date(Date.UTC(2026, 10, 1, 8, 0, s + 613 * i)).toISOString();
  const changed = i % 23;
  const total = 340 + (i % 17);
  const cond = (type: string, status: string, reason: string, message: string, at: string) => ({
    type,
    status,
    reason,
    message,
    lastTransitionTime: at,
    observedGeneration: 1,
  });
  const host = hostname(i);
  const addr = address(i);
  const svc = (name: string, last: number) => ({
    name: `${name}-30.example.test`,
    address: addr.replace(/\.\d+$/, `.${last}`),
  });
  return {
    observedGeneration: 1,
    phase: "Waiting",
    address: addr,
    vlan: 30,
    portGroup: "VLAN-30",
    services: { dns: svc("dns", 254), ntp: svc("ntp", 253), proxy: svc("proxy", 252) },
    vm: {
      moRef: `vm-${1000 + i}`,
      name: host.split(".")[0],
      instanceUUID: `50190000-0000-4000-8000-${hex(i, 12)}`,
      powerState: "poweredOn",
      nics: [
        { role: "service", portGroup: "VLAN-30", macAddress: mac(i, 1), connected: true },
        { role: "boot", portGroup: "VLAN-BOOT", macAddress: mac(i, 2), connected: false },
      ],
    },
    install: {
      method: "network",
      startedAt: t(10),
      kickstartFetchedAt: t(40),
      keysFetchedAt: t(300),
      completedAt: t(420),
    },
    puppet: {
      requestedAt: t(430),
      finishedFor: t(430),
      environment: "production",
      tags: "",
      lastRunAt: t(430),
      changed,
      failed: 0,
      total,
      configVersion: "1761984000",
    },
    conditions: [
      cond("NameResolved", "True", "Resolved", `${addr} (VLAN 30, port group VLAN-30)`, t(1)),
      cond(
        "Ready",
        "False",
        "ClassNotFound",
        // The reconciler's own sentence (virtualserver.ts), through the same scrub.
        scrub(
          `VirtualServerClass ${cls} does not exist; create it or fix spec.className. ` +
            "vsop goes on when it appears.",
        ),
        t(500),
      ),
      cond("VMCreated", "True", "Created", `VM ${host.split(".")[0]} (vm-${1000 + i}).`, t(9)),
      cond("Installed", "True", "Installed", `Installed at ${t(420)}.`, t(420)),
      cond(
        "PuppetApplied",
        "True",
        "Applied",
        `Puppet applied: ${changed} changed, 0 failed of ${total} resources, config version 1761984000.`,
        t(440),
      ),
    ],
  };
}

/** Runs fn(0..n-1) with at most `limit` calls in flight. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

async function createServers(kube: Kube, ns: string, id: string, cls: string): Promise<void> {
  const base = serversPath(ns);
  let done = 0;
  const t0 = Date.now();
  const ticker = setInterval(() => log(`created ${done}/${SCALE}`), 15_000);
  try {
    await pool(SCALE, CONCURRENCY, async (i) => {
      const obj = await kube.request<{ metadata: Record<string, unknown> }>(
        "POST",
        base,
        server(ns, id, cls, i),
        { params: { fieldManager: "kubectl-client-side-apply" } },
      );
      await kube.request(
        "PUT",
        `${base}/scale-${i}/status`,
        { ...obj, status: status(cls, i) },
        {
          params: { fieldManager: "vsop" },
        },
      );
      done++;
    });
  } finally {
    clearInterval(ticker);
  }
  log(`created ${SCALE} VirtualServers with status in ${secs(Date.now() - t0)}`);
}

async function deleteServers(kube: Kube, ns: string): Promise<void> {
  const base = serversPath(ns);
  for (let i = 0; i < 10; i++) {
    // One deletecollection removes them all unless it times out first; then again.
    await kube.delete(base).catch(() => undefined);
    const left = await kube.request<{ items: unknown[] }>("GET", base, undefined, {
      params: { limit: "1" },
    });
    if (left.items.length === 0) return;
  }
  log(`some VirtualServers in ${ns} are left; delete them by hand`);
}

// --- the floor: raw requests from this process -------------------------------------------------

interface Raw {
  ms: number;
  bytes: number;
  note?: string;
}

async function httpsOptions(): Promise<https.RequestOptions & { base: URL }> {
  const kc = await fromFile(stackEnv("KUBECONFIG"));
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  return { ...opts, base: new URL(kc.getCurrentCluster()!.server) };
}

/** One GET, read to its end without parsing; time to the last byte. */
async function rawGet(
  pathAndQuery: string,
  onData?: (chunk: Buffer) => boolean,
  headers: Record<string, string> = {},
): Promise<Raw & { status: number; body: Buffer[] }> {
  const o = await httpsOptions();
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        ...o,
        host: o.base.hostname,
        port: o.base.port,
        path: pathAndQuery,
        method: "GET",
        headers: { ...o.headers, Accept: "application/json", ...headers },
        timeout: 120_000,
      },
      (res) => {
        const body: Buffer[] = [];
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          bytes += c.length;
          if (onData) {
            if (onData(c)) {
              resolve({ ms: performance.now() - t0, bytes, status: res.statusCode ?? 0, body });
              res.destroy();
            }
          } else body.push(c);
        });
        res.on("end", () =>
          resolve({ ms: performance.now() - t0, bytes, status: res.statusCode ?? 0, body }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

async function listOnce(
  base: string,
  query: string,
  headers: Record<string, string> = {},
): Promise<Raw> {
  const r = await rawGet(`${base}?${query}`, undefined, headers);
  if (r.status !== 200) return { ms: r.ms, bytes: r.bytes, note: `HTTP ${r.status}` };
  return { ms: r.ms, bytes: r.bytes };
}

/** Pages of 500 with continue tokens: the API server reads each page from etcd. */
async function listPaged(base: string): Promise<Raw> {
  let ms = 0;
  let bytes = 0;
  let cont = "";
  do {
    const r = await rawGet(
      `${base}?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ""}`,
    );
    ms += r.ms;
    bytes += r.bytes;
    cont = (JSON.parse(Buffer.concat(r.body).toString()) as { metadata: { continue?: string } })
      .metadata.continue!;
  } while (cont);
  return { ms, bytes };
}

/** A watch with sendInitialEvents=true: time until the initial-events-end bookmark. */
async function streamingList(base: string, query = ""): Promise<Raw> {
  let tail = "";
  let refused = "";
  const q =
    "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
  const r = await rawGet(`${base}?${q}${query}`, (chunk) => {
    // The bookmark is the last line of the initial events; look only at the recent bytes.
    tail = (tail + chunk.toString("latin1")).slice(-4096);
    // A server that cannot serve it says so in an ERROR event (etcd without progress requests).
    const err = /^\{"type":"ERROR".*"message":"([^"]*)"/.exec(tail);
    if (err) refused = err[1]!;
    return !!refused || tail.includes('"k8s.io/initial-events-end":"true"');
  });
  if (r.status !== 200 || refused)
    return { ms: r.ms, bytes: r.bytes, note: refused || `HTTP ${r.status}` };
  return { ms: r.ms, bytes: r.bytes };
}

async function floor(ns: string): Promise<Record<string, Raw>> {
  const base = serversPath(ns);
  const out: Record<string, Raw> = {};
  // Twice each, the better one counts: the first may pay for a cold cache or a GC.
  const best = async (f: () => Promise<Raw>) => {
    const a = await f();
    const b = await f();
    return a.ms <= b.ms ? a : b;
  };
  out["LIST resourceVersion=0 (watch cache)"] = await best(() =>
    listOnce(base, "resourceVersion=0"),
  );
  out["LIST resourceVersion=0, gzip (as axios asks)"] = await best(() =>
    listOnce(base, "resourceVersion=0", { "Accept-Encoding": "gzip" }),
  );
  out["LIST resourceVersion=0, parsed here (JSON.parse)"] = await best(async () => {
    const r = await rawGet(`${base}?resourceVersion=0`);
    const t0 = performance.now();
    JSON.parse(Buffer.concat(r.body).toString());
    return { ms: r.ms + performance.now() - t0, bytes: r.bytes };
  });
  out["LIST without resourceVersion (consistent read)"] = await best(() => listOnce(base, ""));
  out["LIST limit=500 with continue (etcd)"] = await best(() => listPaged(base));
  out["streaming list (sendInitialEvents=true watch)"] = await best(() => streamingList(base));
  // What vsop asks (caches.ts): its list shards' plain lists, START_LISTS_IN_FLIGHT at a time,
  // from the watch cache; and the same as streamed lists. Each until the last one's end.
  const shards = (one: (selector: string) => Promise<Raw>) => async (): Promise<Raw> => {
    const t0 = performance.now();
    const selectors = listShardSelectors(START_LISTS);
    const parts: Raw[] = [];
    await pool(selectors.length, START_LISTS_IN_FLIGHT, async (i) => {
      parts[i] = await one(`labelSelector=${encodeURIComponent(selectors[i]!)}`);
    });
    return {
      ms: performance.now() - t0,
      bytes: parts.reduce((n, p) => n + p.bytes, 0),
      ...(parts.some((p) => p.note) && { note: parts.map((p) => p.note).join("; ") }),
    };
  };
  out[`list shards' LISTs (resourceVersion=0), ${START_LISTS_IN_FLIGHT} at a time`] = await best(
    shards((q) => listOnce(base, `resourceVersion=0&${q}`)),
  );
  out[`list shards' streaming lists, ${START_LISTS_IN_FLIGHT} at a time`] = await best(
    shards((q) => streamingList(base, `&${q}`)),
  );
  return out;
}

// --- the operator ------------------------------------------------------------------------------

interface Memory {
  rssKiB: number;
  hwmKiB: number;
}

// CPU time a process has used (user + system) in ms, from /proc/PID/stat: the API server's beside
// the operator's tells whether a sync was waiting on the server or on its own parsing.
const TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The fields after the command name, which is in parentheses and may hold spaces.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS;
}

function apiServerPid(): number {
  return Number(
    readFileSync(path.join(stackEnv("VSOP_STACK_DIR"), "pids", "kube-apiserver.pid"), "utf8"),
  );
}

/**
 * Garbage collections the API server has finished (its Go runtime's count, from /metrics). Its
 * heap holds the watch cache (10,000 servers' worth) and a full list's garbage brings a cycle
 * every few lists; one that falls within a start's sync takes CPU from it on two shared cores.
 * Counted at the end of each cycle, so a cycle that began before the spawn counts too.
 */
async function apiServerGcCycles(): Promise<number> {
  const r = await rawGet("/metrics");
  return metric(Buffer.concat(r.body).toString("utf8"), "go_gc_duration_seconds_count");
}

function memory(pid: number): Memory {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? 0);
  return { rssKiB: kib("VmRSS"), hwmKiB: kib("VmHWM") };
}

interface Run {
  /**
   * The floor just before this start: one LIST of the same objects from the watch cache
   * (resourceVersion=0), asked by this process, the issue's "floor to beat". Measured beside
   * each start, it sees the same machine: on two shared cores it moves by a second from run to run.
   */
  floorMs: number;
  /** Until "vsop starting": node up, modules loaded, informers about to start. */
  startMs: number;
  syncMs: number;
  /** CPU ms from spawn to "caches synced": the operator's, and the API server's meanwhile. */
  cpuToSync: { operator: number; apiServer: number };
  /** The API server's garbage collections from spawn to "caches synced". */
  apiServerGcs: number;
  afterSync: Memory;
  passMs: number;
  afterPass: Memory;
  /** At the end of the quiet window after the first pass. */
  end: Memory;
  writes: number;
  writesBy: Record<string, number>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** The time of the operator's log line with this message, once it is in its log. */
function loggedAt(op: Operator, msg: string): number | undefined {
  let logs = "";
  try {
    logs = op.logs();
  } catch {
    return undefined; // not opened yet
  }
  for (const line of logs.split("\n")) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    return Date.parse((JSON.parse(line) as { time: string }).time);
  }
  return undefined;
}

async function runOperator(
  label: string,
  entry: string,
  ns: string,
  id: string,
  quietMs: number,
): Promise<Run> {
  const floorMs = (await listOnce(serversPath(ns), "resourceVersion=0")).ms;
  // Ports the system hands out now (the harness's fixed blocks can meet other users' operators).
  const [metrics, health, provisioning] = await Promise.all([freePort(), freePort(), freePort()]);
  const since = new Date();
  const apiServer = apiServerPid();
  const gcs0 = await apiServerGcCycles();
  const apiServerCpu0 = cpuMs(apiServer);
  const t0 = Date.now();
  const op = startOperator(
    `scale-${id}-${label}-${Date.now().toString(36)}`,
    // The operator's defaults, except: this namespace only, info logs, those ports.
    [
      ...["--namespace", ns, "--log-level", "info"],
      ...["--backoff-base", "1s", "--backoff-max", "60s"],
      ...["--metrics-bind-address", `127.0.0.1:${metrics}`],
      ...["--health-probe-bind-address", `127.0.0.1:${health}`],
      ...["--provisioning-bind-address", `127.0.0.1:${provisioning}`],
    ],
    { entry },
  );
  try {
    let synced: number | undefined;
    const deadline = Date.now() + 120_000;
    while (!(synced = loggedAt(op, "caches synced"))) {
      if (op.proc.exitCode !== null) throw new Error(`operator exited: ${op.logs().slice(-2000)}`);
      if (Date.now() > deadline) throw new Error("operator not synced in 120 s");
      await sleep(20);
    }
    const afterSync = memory(op.proc.pid!);
    const cpuToSync = {
      operator: cpuMs(op.proc.pid!),
      apiServer: cpuMs(apiServer) - apiServerCpu0,
    };
    const apiServerGcs = (await apiServerGcCycles()) - gcs0;
    // The first pass: every object reconciled once (each fails ClassNotFound and is retried
    // later with backoff, so the count passes SCALE once the queue has been through them all).
    let passMs = 0;
    while (!passMs) {
      const { body } = await scrape(metrics).catch(() => ({ body: "" }));
      if (metric(body, "vsop_reconciles_total") >= SCALE && metric(body, "workqueue_depth") === 0)
        passMs = Date.now() - t0;
      else if (Date.now() > deadline) throw new Error("first reconcile pass not done in 120 s");
      else await sleep(200);
    }
    const afterPass = memory(op.proc.pid!);
    await sleep(quietMs);
    const end = memory(op.proc.pid!);
    const writes = auditEvents(since).filter(
      (e) => e.objectRef?.namespace === ns && WRITE_VERBS.has(e.verb),
    );
    const writesBy: Record<string, number> = {};
    for (const e of writes) {
      const k = `${e.verb} ${e.objectRef?.resource ?? "?"}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ""}`;
      writesBy[k] = (writesBy[k] ?? 0) + 1;
    }
    return {
      floorMs,
      startMs: loggedAt(op, "vsop starting")! - t0,
      syncMs: synced - t0,
      cpuToSync,
      apiServerGcs,
      afterSync,
      passMs,
      afterPass,
      end,
      writes: writes.length,
      writesBy,
    };
  } finally {
    await stopOperator(op);
  }
}

/** SIGTERM, then SIGKILL if it has not exited within 20 s (said, since it is a finding too). */
async function stopOperator(op: Operator): Promise<void> {
  const exited = op.stop();
  const t = setTimeout(() => {
    log(`operator ${op.proc.pid} still running 20 s after SIGTERM; SIGKILL`);
    op.proc.kill("SIGKILL");
  }, 20_000);
  await exited;
  clearTimeout(t);
}

/** How long each run goes on after its first pass (writes counted, memory sampled at the end). */
const quiet = { "first start": 5000, "quiet restart": 15_000 };

function report(title: string, first: Run, restart: Run): void {
  console.log(title);
  for (const [name, r] of [
    ["first start", first],
    ["quiet restart", restart],
  ] as const) {
    console.log(
      `  ${name.padEnd(14)} caches synced ${secs(r.syncMs).padStart(8)} after spawn ` +
        `(floor just before: one LIST ${secs(r.floorMs)}; ` +
        `${secs(r.startMs)} to start listing; CPU vsop ${secs(r.cpuToSync.operator)}, ` +
        `API server ${secs(r.cpuToSync.apiServer)}, ${r.apiServerGcs} of its GCs); ` +
        `RSS ${mib(r.afterSync.rssKiB)} (peak ${mib(r.afterSync.hwmKiB)}) then; ` +
        `first pass ${secs(r.passMs)}, RSS ${mib(r.afterPass.rssKiB)} (peak ${mib(r.afterPass.hwmKiB)}); ` +
        `${secs(quiet[name])} later RSS ${mib(r.end.rssKiB)} (peak ${mib(r.end.hwmKiB)}); ` +
        `writes ${r.writes}${r.writes ? ` ${JSON.stringify(r.writesBy)}` : ""}`,
    );
  }
}

/** ROUNDS > 1: each figure's range and median over the rounds. */
function summary(title: string, rounds: { first: Run; restart: Run }[]): void {
  const runs = rounds.flatMap((r) => [r.first, r.restart]);
  const span = (xs: number[], fmt: (x: number) => string) =>
    `${fmt(Math.min(...xs))} to ${fmt(Math.max(...xs))} (median ${fmt(median(xs))})`;
  const line = (label: string, xs: number[], fmt: (x: number) => string) =>
    console.log(`  ${label.padEnd(40)} ${span(xs, fmt)}`);
  console.log(`${title}, ${rounds.length} rounds (${runs.length} starts):`);
  line(
    "caches synced after spawn",
    runs.map((r) => r.syncMs),
    secs,
  );
  line(
    "floor: one LIST just before each start",
    runs.map((r) => r.floorMs),
    secs,
  );
  line(
    "caches synced / that start's floor",
    runs.map((r) => r.syncMs / r.floorMs),
    (x) => `${x.toFixed(2)}x`,
  );
  line(
    "CPU to sync: vsop",
    runs.map((r) => r.cpuToSync.operator),
    secs,
  );
  line(
    "CPU to sync: API server",
    runs.map((r) => r.cpuToSync.apiServer),
    secs,
  );
  // The same starts parted by whether the API server collected garbage during the sync.
  for (const [label, part] of [
    ["synced, no API server GC meanwhile", runs.filter((r) => r.apiServerGcs === 0)],
    ["synced, API server GC meanwhile", runs.filter((r) => r.apiServerGcs > 0)],
  ] as const)
    if (part.length)
      line(
        `${label} (${part.length})`,
        part.map((r) => r.syncMs),
        secs,
      );
  line(
    "peak RSS to the end of the first pass",
    runs.map((r) => r.afterPass.hwmKiB),
    mib,
  );
  line(
    `RSS ${secs(quiet["quiet restart"])} after a restart's first pass`,
    rounds.map((r) => r.restart.end.rssKiB),
    mib,
  );
  console.log(`  ${"writes".padEnd(40)} ${runs.reduce((n, r) => n + r.writes, 0)}`);
}

async function measure(label: string, entry: string, ns: string, id: string) {
  log(`${label}: first start (${entry})`);
  const first = await runOperator(`${label}-first`, entry, ns, id, quiet["first start"]);
  log(`${label}: quiet restart`);
  const restart = await runOperator(`${label}-restart`, entry, ns, id, quiet["quiet restart"]);
  return { first, restart };
}

async function main(): Promise<void> {
  const started = Date.now();
  installVsop();
  const kube = new Kube(await fromFile(stackEnv("KUBECONFIG")));
  const ns = REUSE ?? createNamespace("scale");
  const id = ns.slice(ns.indexOf("-") + 1);
  // A class nobody creates: the objects wait for it, ClassNotFound, and vsop writes nothing.
  const cls = `scale-missing-${id}`;
  try {
    log(`namespace ${ns}; SCALE=${SCALE}`);
    if (!REUSE) await createServers(kube, ns, id, cls);
    const raw = FLOOR ? await floor(ns) : {};
    const entry = path.join(ROOT, "dist/main.js");
    const builds = [
      ...(BASELINE ? [{ label: "baseline", entry: BASELINE, title: `baseline ${BASELINE}` }] : []),
      { label: "this", entry, title: `this tree ${entry}` },
    ].map((b) => ({ ...b, rounds: [] as Awaited<ReturnType<typeof measure>>[] }));
    // Alternating builds, round by round: the machine's drift falls on both alike.
    for (let r = 1; r <= ROUNDS; r++) {
      if (ROUNDS > 1) log(`round ${r} of ${ROUNDS}`);
      for (const b of builds) b.rounds.push(await measure(b.label, b.entry, ns, id));
    }

    console.log("");
    console.log(`vsop bench-scale: ${SCALE} VirtualServers with status in one namespace`);
    console.log("Floor (requests from the bench process, best of two):");
    for (const [k, r] of Object.entries(raw))
      console.log(
        `  ${k.padEnd(50)} ${r.note ? `not available (${r.note.slice(0, 200)})` : `${secs(r.ms).padStart(8)}  ${(r.bytes / 2 ** 20).toFixed(1)} MiB`}`,
      );
    for (const { title, rounds } of builds)
      rounds.forEach((m, i) =>
        report(`Operator, ${title}${ROUNDS > 1 ? `, round ${i + 1}` : ""}:`, m.first, m.restart),
      );
    if (ROUNDS > 1) for (const { title, rounds } of builds) summary(`Operator, ${title}`, rounds);
    console.log("");
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    if (KEEP || REUSE) log(`objects kept in namespace ${ns} (SCALE_NS=${ns} reuses them)`);
    else {
      log(`deleting ${SCALE} VirtualServers and namespace ${ns}`);
      await deleteServers(kube, ns);
      kubectlTry(["delete", "namespace", ns, "--wait=false"]);
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench-scale failed: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);

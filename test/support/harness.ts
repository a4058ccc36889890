// End-to-end harness: installs vsop's CRDs and RBAC into the stack's kube-apiserver, runs the
// operator exactly as the image does (node dist/main.js run …) with the ServiceAccount's token,
// and offers small waits and readers over kubectl, DNS and the audit log.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  appendFileSync,
  createWriteStream,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import * as yaml from "js-yaml";
import { GROUP, VERSION, VS_PLURAL } from "../../src/api/types.js";
import { apiGetSync } from "./api-get.js";
import { stackEnv } from "./env.js";

export const ROOT = new URL("../..", import.meta.url).pathname;
export const OPERATOR_NS = "vsop-system";
export const OPERATOR_USER = "system:serviceaccount:vsop-system:vsop";

export function kubectl(args: string[], input?: string): string {
  return execFileSync("kubectl", args, {
    encoding: "utf8",
    input,
    // Beyond the 1 MiB default: `get -A -o json` on a stack that also holds a kept scale bench
    // (`make bench SCALE=10000 SCALE_KEEP=1`: ~50 MiB of servers) threw ENOBUFS.
    maxBuffer: 256 << 20,
    env: { ...process.env, KUBECONFIG: stackEnv("KUBECONFIG") },
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/** kubectl that returns stderr instead of throwing, for the API server's refusals. */
export function kubectlTry(args: string[], input?: string): { ok: boolean; out: string } {
  try {
    return { ok: true, out: kubectl(args, input) };
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

export function apply(...objects: object[]): void {
  kubectl(["apply", "-f", "-"], objects.map((o) => yaml.dump(o)).join("---\n"));
}

export function getJSON<T = Record<string, unknown>>(args: string[]): T {
  return JSON.parse(kubectl([...args, "-o", "json"])) as T;
}

export function tryGetJSON<T = Record<string, unknown>>(args: string[]): T | undefined {
  const r = kubectlTry([...args, "-o", "json"]);
  return r.ok ? (JSON.parse(r.out) as T) : undefined;
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${last}` : ""}`,
      );
    await sleep(250);
  }
}

/** CRDs, the vsop-system namespace and the shipped RBAC, as `kubectl apply -k deploy/` would. */
export function installVsop(): void {
  // Two test files starting at once both create what is missing; the one that loses the race is
  // told AlreadyExists, and applying again updates what the other created.
  for (let attempt = 1; ; attempt++) {
    try {
      kubectl(["apply", "-k", path.join(ROOT, "deploy")]);
      break;
    } catch (err) {
      if (attempt >= 3 || !String((err as Error).message).includes("AlreadyExists")) throw err;
    }
  }
  kubectl([
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    "crd/virtualservers.provisioning.vsop.dev",
    "crd/virtualserverclasses.provisioning.vsop.dev",
  ]);
}

/**
 * A kubeconfig that authenticates as the vsop ServiceAccount (token request, 1 day); `server`
 * replaces the API server's URL (e.g. a proxy's), `file` the shared file it is written to.
 */
export function operatorKubeconfig(opts: { server?: string; file?: string } = {}): string {
  const token = kubectl(["-n", OPERATOR_NS, "create", "token", "vsop", "--duration=24h"]).trim();
  const admin = yaml.load(readFileSync(stackEnv("KUBECONFIG"), "utf8")) as {
    clusters: { cluster: { server: string } }[];
  };
  const file = opts.file ?? path.join(stackEnv("VSOP_STACK_DIR"), "operator.kubeconfig");
  writeFileSync(
    file,
    yaml.dump({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "stack",
          cluster: {
            server: opts.server ?? admin.clusters[0]!.cluster.server,
            "certificate-authority": stackEnv("VSOP_KUBE_CA"),
          },
        },
      ],
      users: [{ name: "vsop", user: { token } }],
      contexts: [{ name: "vsop", context: { cluster: "stack", user: "vsop" } }],
      "current-context": "vsop",
    }),
    { mode: 0o600 },
  );
  return file;
}

export interface Operator {
  proc: ChildProcess;
  logFile: string;
  metricsPort: number;
  healthPort: number;
  provisioningPort: number;
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

let nextPort = 19100;
/**
 * Ten ports for one operator, varied by process so test files do not reuse each other's.
 * Kept within 19100-23099, below the stack's fixed ports (etcd 23790/23800): a block there
 * once made an operator's metrics port collide with etcd's peer port.
 */
export function freePortBlock(): number {
  for (let tries = 0; ; tries++) {
    const p = 19100 + ((nextPort - 19100) % 900) + (process.pid % 31) * 100;
    nextPort += 10;
    // Two test files run at once: a block is used only when nothing listens on any of its ports.
    if (portsFree(p, 10) || tries >= 90) return p;
  }
}

/** Whether `count` ports from `first` on 127.0.0.1 can all be listened on (checked in a child). */
function portsFree(first: number, count: number): boolean {
  const probe = `const net = require("node:net");
    (async () => { for (let p = ${first}; p < ${first + count}; p++) await new Promise((ok, bad) => {
      const s = net.createServer().once("error", bad).listen(p, "127.0.0.1", () => s.close(ok)); });
    })().then(() => process.exit(0), () => process.exit(1));`;
  return spawnSync(process.execPath, ["-e", probe], { timeout: 10_000 }).status === 0;
}

/**
 * Runs `node dist/main.js run` as the ServiceAccount, with the given extra flags (a flag given
 * again overrides the default here). `kubeconfig`: one made by operatorKubeconfig (a fresh one
 * by default); `entry`: another build's main.js, for a benchmark.
 */
export function startOperator(
  name: string,
  extra: string[] = [],
  opts: { kubeconfig?: string; entry?: string } = {},
): Operator {
  const base = freePortBlock();
  const logDir = path.join(stackEnv("VSOP_STACK_DIR"), "logs");
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `operator-${name}.log`);
  const out = createWriteStream(logFile, { flags: "a" });
  const proc = spawn(
    "node",
    [
      opts.entry ?? path.join(ROOT, "dist/main.js"),
      "run",
      "--kubeconfig",
      opts.kubeconfig ?? operatorKubeconfig(),
      "--metrics-bind-address",
      `127.0.0.1:${base}`,
      "--health-probe-bind-address",
      `127.0.0.1:${base + 1}`,
      "--provisioning-bind-address",
      `127.0.0.1:${base + 2}`,
      "--operator-namespace",
      OPERATOR_NS,
      "--backoff-base",
      "500ms",
      "--backoff-max",
      "4s",
      "--log-level",
      "debug",
      ...extra,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, KUBECONFIG: "" } },
  );
  proc.stdout!.pipe(out);
  proc.stderr!.pipe(out);
  // A pid file beside the stack's own, so that `make stack-down` stops an operator whose test
  // run was interrupted before it could stop it.
  const pidFile = path.join(stackEnv("VSOP_STACK_DIR"), "pids", `operator-${name}-${proc.pid}.pid`);
  if (proc.pid) writeFileSync(pidFile, String(proc.pid));
  const exited = new Promise<number | null>((resolve) =>
    proc.once("exit", (code) => {
      rmSync(pidFile, { force: true });
      resolve(code);
    }),
  );
  return {
    proc,
    logFile,
    metricsPort: base,
    healthPort: base + 1,
    provisioningPort: base + 2,
    logs: () => readFileSync(logFile, "utf8"),
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export async function scrape(
  port: number,
  path = "/metrics",
): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** The value of one Prometheus sample line (0 when absent). */
export function metric(body: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of body.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

// --- VirtualServers ---------------------------------------------------------------------------

export interface VS {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    labels?: Record<string, string>;
    generation: number;
    finalizers?: string[];
    deletionTimestamp?: string;
  };
  spec: Record<string, unknown>;
  status?: {
    phase?: string;
    observedGeneration?: number;
    address?: string;
    vlan?: number;
    conditions?: {
      type: string;
      status: string;
      reason: string;
      message: string;
      lastTransitionTime: string;
    }[];
    [k: string]: unknown;
  };
}

/** The VirtualServer as the API server has it now; undefined when absent or unreachable. */
export function getVS(ns: string, name: string): VS | undefined {
  try {
    const r = apiGetSync(
      `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(ns)}/${VS_PLURAL}/${encodeURIComponent(name)}`,
    );
    return r.status === 200 ? (r.object as VS) : undefined;
  } catch {
    return undefined;
  }
}

export function cond(vs: VS | undefined, type: string) {
  return vs?.status?.conditions?.find((c) => c.type === type);
}

/** Waits until the condition has the status (and reason, when given); returns the object. */
export function waitForCondition(
  ns: string,
  name: string,
  type: string,
  status: string,
  reason?: string,
  timeoutMs = 60_000,
): Promise<VS> {
  return waitFor(
    `${ns}/${name} ${type}=${status}${reason ? ` (${reason})` : ""}`,
    () => {
      const vs = getVS(ns, name);
      const c = cond(vs, type);
      return c && c.status === status && (!reason || c.reason === reason) ? vs : undefined;
    },
    timeoutMs,
  );
}

export function events(
  ns: string,
  name: string,
): { type: string; reason: string; message: string }[] {
  const list = getJSON<{ items: { type: string; reason: string; message: string }[] }>([
    "-n",
    ns,
    "get",
    "events",
    "--field-selector",
    `involvedObject.name=${name}`,
  ]);
  return list.items;
}

export function createNamespace(prefix: string): string {
  const ns = `${prefix}-${Date.now().toString(36)}`;
  kubectl(["create", "namespace", ns]);
  return ns;
}

// --- DNS (dnsmasq re-reads its hosts file on SIGHUP) -------------------------------------------

export function addDNS(address: string, name: string): void {
  addDNSRecords([[address, name]]);
}

export function removeDNS(name: string): void {
  removeDNSNames([name]);
}

/** Several records in one write and one reload. */
export function addDNSRecords(records: [address: string, name: string][]): void {
  withHostsFile((file) => appendFileSync(file, records.map(([a, n]) => `${a} ${n}\n`).join("")));
}

export function removeDNSNames(names: Iterable<string>): void {
  const gone = new Set(names);
  withHostsFile((file) => {
    const lines = readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => !gone.has(l.trim().split(/\s+/)[1] ?? ""));
    writeFileSync(file, lines.join("\n"));
  });
}

/** Blocks this thread for `ms` (for synchronous helpers that wait between tries). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Changes the stack's hosts file under a lock, then has dnsmasq re-read it: test files run
 * several at a time, and a read-modify-write racing another file's append would drop its
 * records. A lock older than 10 s is a crashed writer's and is broken.
 */
function withHostsFile(change: (file: string) => void): void {
  const file = stackEnv("VSOP_DNS_HOSTS_FILE");
  const lock = `${file}.lock`;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 10_000) rmSync(lock, { recursive: true });
      } catch {
        // released meanwhile
      }
      sleepSync(20);
    }
  }
  try {
    change(file);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
  reloadDNS();
}

function reloadDNS(): void {
  const pid = Number(readFileSync(stackEnv("VSOP_DNS_PIDFILE"), "utf8").trim());
  process.kill(pid, "SIGHUP");
}

// --- the audit log: who wrote what -------------------------------------------------------------

export interface AuditEvent {
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  requestReceivedTimestamp: string;
  stage: string;
  userAgent?: string;
}

/** Whether an audit event is a request of this operator process (its User-Agent names its pid):
 * every operator authenticates as the same ServiceAccount, and test files run several at a time. */
export const madeBy =
  (op: Operator) =>
  (e: AuditEvent): boolean =>
    e.userAgent?.endsWith(`; pid ${op.proc.pid})`) ?? false;

export function auditEvents(since: Date, user = OPERATOR_USER): AuditEvent[] {
  return readFileSync(stackEnv("VSOP_AUDIT_LOG"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditEvent)
    .filter(
      (e) =>
        e.stage === "ResponseComplete" &&
        e.user.username === user &&
        new Date(e.requestReceivedTimestamp) >= since,
    );
}

export const WRITE_VERBS = new Set(["create", "update", "patch", "delete", "deletecollection"]);

/** Deletes the namespace's VirtualServers and waits until the operator has released them all. */
export async function deleteServers(ns: string, timeoutMs = 60_000): Promise<void> {
  kubectl(["-n", ns, "delete", "virtualservers", "--all", "--wait=false"]);
  await waitFor(
    `VirtualServers in ${ns} released`,
    () => {
      const list = getJSON<{ items: unknown[] }>(["-n", ns, "get", "virtualservers"]);
      return list.items.length === 0;
    },
    timeoutMs,
  );
}

// --- simulated servers: a real mcollectived + puppet apply per FQDN (hack/node-up.sh) ---------

/**
 * identityKey: a file with the server's own key, from vsop's one-time bootstrap. `master`: the
 * node runs `puppet agent` against the stack's Puppet master (with `csrAttributes`, a file, as
 * its csr_attributes.yaml) instead of `puppet apply` of the manifest.
 */
export function nodeUp(
  fqdn: string,
  manifest = "default.pp",
  identityKey?: string,
  opts: { master?: boolean; csrAttributes?: string } = {},
): void {
  execFileSync(path.join(ROOT, "hack/node-up.sh"), [fqdn, manifest], {
    stdio: "ignore",
    env: {
      ...process.env,
      ...(identityKey ? { IDENTITY_KEY: identityKey } : {}),
      ...(opts.master ? { PUPPET_MASTER: "1" } : {}),
      ...(opts.csrAttributes ? { CSR_ATTRIBUTES: opts.csrAttributes } : {}),
    },
  });
}

export function nodeDown(fqdn: string): void {
  execFileSync(path.join(ROOT, "hack/node-down.sh"), [fqdn], { stdio: "ignore" });
}

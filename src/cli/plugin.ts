// `kubectl vsop …`: the kubectl plugin (the executable kubectl-vsop on PATH, krew naming) for what
// people do by hand: read every server's steps, ask for a Puppet run and follow it, ask a server's
// mcollectived something. It talks to the API server with the user's kubeconfig, like kubectl.
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import type * as k8s from "@kubernetes/client-node";
import {
  GROUP,
  PUPPET_RUN_REQUESTED_AT,
  VERSION,
  VS_PLURAL,
  type VirtualServer,
} from "../api/types.js";
import type { Kube } from "../controller/kube.js";
import { execMco, MCO_FLAGS, parseMcoArgs } from "./mco.js";
import {
  nextRebuildTime,
  nextRequestTime,
  paintFor,
  progressLine,
  puppetSummary,
  runVerdict,
  statusDetail,
  statusTable,
} from "./plugin-format.js";
import { parseDuration, UsageError } from "./run-flags.js";

export const PLUGIN_USAGE = `Usage: kubectl vsop <command> [flags]

Commands:
  status [NAME]          every VirtualServer's steps (NameResolved, VMCreated, Installed,
                         BootNICDisconnected, PuppetApplied, Ready): status, reason and age of each;
                         with NAME, that server in detail (messages, address, VLAN, VM, Puppet)
  puppet run NAME        ask vsop for one Puppet run (annotation ${PUPPET_RUN_REQUESTED_AT})
                         and follow it until it finished; exit 0 when PuppetApplied=True, 1 otherwise
  rebuild NAME           reinstall the server on its VM (sets spec.rebuildRequestedAt to now);
                         kubectl vsop status NAME follows it
  mco ping HOST          does HOST's mcollectived answer through the broker (exit 1 if not)
  mco last-run HOST      HOST's last Puppet run summary, read through MCollective
  version                print the version

Flags:
  -n, --namespace NS       namespace (default: the kubeconfig context's, else default)
  -A, --all-namespaces     status: servers of every namespace
  -o, --output FORMAT      status: wide (adds each condition's message); mco: json (as vsop mco prints)
      --kubeconfig FILE    kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)
      --context NAME       kubeconfig context (default: the current one)
      --timeout DURATION   puppet run: how long to follow the run (default 10m);
                           mco: how long to wait for replies (default 10s)
      --no-wait            puppet run: set the annotation and return
  -h, --help               show this help

MCollective flags (mco; the same as vsop mco, defaults from $VSOP_AMQP_URL and $VSOP_MCO_DIR):
      --url URL  --ca FILE  --client-key FILE  --client-cert-name NAME
      --server-public-key FILE  --collective NAME
`;

const MCO_CONNECTION_FLAGS = [
  "url",
  "ca",
  "client-key",
  "client-cert-name",
  "server-public-key",
  "collective",
] as const;

const FLAGS = {
  namespace: { type: "string", short: "n" },
  "all-namespaces": { type: "boolean", short: "A" },
  output: { type: "string", short: "o" },
  kubeconfig: { type: "string" },
  context: { type: "string" },
  timeout: { type: "string" },
  "no-wait": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  url: MCO_FLAGS.url,
  ca: MCO_FLAGS.ca,
  "client-key": MCO_FLAGS["client-key"],
  "client-cert-name": MCO_FLAGS["client-cert-name"],
  "server-public-key": MCO_FLAGS["server-public-key"],
  collective: MCO_FLAGS.collective,
} as const;

export type PluginCommand =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "status"; name?: string; allNamespaces: boolean; wide: boolean }
  | { kind: "puppet-run"; name: string; timeoutMs: number; wait: boolean }
  | { kind: "rebuild"; name: string }
  | { kind: "mco"; action: "ping" | "last-run"; host: string; json: boolean; mcoArgs: string[] };

export interface PluginArgs {
  command: PluginCommand;
  namespace?: string;
  kubeconfig?: string;
  context?: string;
}

/** Parses `kubectl vsop …` arguments (what kubectl passes after "vsop"). */
export function parsePluginArgs(args: string[]): PluginArgs {
  let parsed;
  try {
    parsed = parseArgs({ args, options: FLAGS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values: v, positionals: p } = parsed;
  const base = { namespace: v.namespace, kubeconfig: v.kubeconfig, context: v.context };
  const [group, ...rest] = p;
  if (v.help || group === undefined || group === "help")
    return { ...base, command: { kind: "help" } };
  const only = (flags: (keyof typeof v)[], command: string) => {
    for (const f of Object.keys(v) as (keyof typeof v)[])
      if (!flags.includes(f) && !["namespace", "kubeconfig", "context"].includes(f))
        throw new UsageError(`--${f} does not go with ${command}`);
  };
  const mcoConnection = MCO_CONNECTION_FLAGS as readonly (keyof typeof v)[];
  switch (group) {
    case "version":
      return { ...base, command: { kind: "version" } };
    case "status": {
      only(["all-namespaces", "output"], "status");
      if (rest.length > 1) throw new UsageError("status takes at most one NAME");
      if (v.output !== undefined && v.output !== "wide")
        throw new UsageError(
          `status: -o ${v.output}: only -o wide (kubectl get vsrv -o json for the objects)`,
        );
      if (rest[0] && v["all-namespaces"])
        throw new UsageError("status NAME takes -n NAMESPACE, not -A");
      return {
        ...base,
        command: {
          kind: "status",
          name: rest[0],
          allNamespaces: v["all-namespaces"] === true,
          wide: v.output === "wide",
        },
      };
    }
    case "puppet": {
      const [action, name, ...extra] = rest;
      if (action !== "run")
        throw new UsageError(`puppet ${action ?? ""}: expected puppet run NAME`);
      if (!name || extra.length > 0) throw new UsageError("puppet run takes exactly one NAME");
      only(["timeout", "no-wait"], "puppet run");
      return {
        ...base,
        command: {
          kind: "puppet-run",
          name,
          timeoutMs: parseDuration(v.timeout ?? "10m", "timeout") * 1000,
          wait: v["no-wait"] !== true,
        },
      };
    }
    case "mco": {
      const [action, host, ...extra] = rest;
      if (action !== "ping" && action !== "last-run")
        throw new UsageError(`mco ${action ?? ""}: expected mco ping HOST or mco last-run HOST`);
      if (!host || extra.length > 0)
        throw new UsageError(`mco ${action} takes exactly one HOST (the server's FQDN)`);
      only([...mcoConnection, "timeout", "output"], `mco ${action}`);
      if (v.output !== undefined && v.output !== "json")
        throw new UsageError(`mco: -o ${v.output}: only -o json`);
      const passed = [...mcoConnection, "timeout"].flatMap((f) => {
        const value = v[f as keyof typeof v];
        return typeof value === "string" ? [`--${f}`, value] : [];
      });
      const mcoArgs =
        action === "ping"
          ? ["ping", "--identity", host, ...passed]
          : ["puppet", "last-run", host, ...passed];
      return {
        ...base,
        command: { kind: "mco", action, host, json: v.output === "json", mcoArgs },
      };
    }
    case "rebuild": {
      const [name, ...extra] = rest;
      if (!name || extra.length > 0) throw new UsageError("rebuild takes exactly one NAME");
      only([], "rebuild");
      return { ...base, command: { kind: "rebuild", name } };
    }
    default:
      throw new UsageError(`unknown command "${group}"\n\n${PLUGIN_USAGE}`);
  }
}

/**
 * The user's kubeconfig as kubectl reads it: --kubeconfig, else $KUBECONFIG, ~/.kube/config,
 * in-cluster. The Kubernetes client loads on first use: --help and mco start faster without it.
 */
export async function pluginKubeConfig(path?: string, context?: string): Promise<k8s.KubeConfig> {
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (context) {
    if (!kc.getContextObject(context))
      throw new UsageError(`--context: no context "${context}" in the kubeconfig`);
    kc.setCurrentContext(context);
  }
  return kc;
}

export interface PluginIO {
  out: NodeJS.WritableStream & { isTTY?: boolean };
  err: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  now: () => number;
}

const base = `/apis/${GROUP}/${VERSION}`;
const serverPath = (ns: string, name: string) => `${base}/namespaces/${ns}/${VS_PLURAL}/${name}`;

/** Runs `kubectl vsop …`; returns the exit code (usage errors throw UsageError). */
export async function runPlugin(
  args: string[],
  io: PluginIO = {
    out: process.stdout,
    err: process.stderr,
    env: process.env,
    now: () => Date.now(),
  },
): Promise<number> {
  const { command, ...target } = parsePluginArgs(args);
  if (command.kind === "help") {
    io.out.write(PLUGIN_USAGE);
    return 0;
  }
  if (command.kind === "version") {
    const { readFileSync } = await import("node:fs");
    const pkg = JSON.parse(
      readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
    ) as { version: string };
    io.out.write(`kubectl-vsop ${pkg.version}\n`);
    return 0;
  }
  if (command.kind === "mco") return mco(command, io);

  const kc = await pluginKubeConfig(target.kubeconfig, target.context);
  const { isNotFound, Kube, KubeError, KubeUnreachable } = await import("../controller/kube.js");
  const kube = new Kube(kc);
  const namespace =
    target.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default";
  try {
    if (command.kind === "status") return await status(kube, namespace, command, io);
    if (command.kind === "rebuild") return await rebuild(kube, namespace, command.name, io);
    return await puppetRun(kube, namespace, command, io);
  } catch (err) {
    if (err instanceof KubeError && isNotFound(err) && "name" in command && command.name) {
      io.err.write(
        `kubectl-vsop: virtualserver "${command.name}" not found in namespace ${namespace}\n`,
      );
      return 1;
    }
    if (err instanceof KubeError || err instanceof KubeUnreachable) {
      io.err.write(`kubectl-vsop: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

async function status(
  kube: Kube,
  namespace: string,
  c: Extract<PluginCommand, { kind: "status" }>,
  io: PluginIO,
): Promise<number> {
  const paint = paintFor(io.out, io.env);
  if (c.name) {
    const vs = await kube.get<VirtualServer>(serverPath(namespace, c.name));
    io.out.write(statusDetail(vs, io.now(), paint));
    return 0;
  }
  const path = c.allNamespaces
    ? `${base}/${VS_PLURAL}`
    : `${base}/namespaces/${namespace}/${VS_PLURAL}`;
  const list = await kube.get<{ items: VirtualServer[] }>(path);
  const items = [...list.items].sort(
    (a, b) =>
      (a.metadata.namespace ?? "").localeCompare(b.metadata.namespace ?? "") ||
      a.metadata.name.localeCompare(b.metadata.name),
  );
  if (items.length === 0) {
    io.err.write(
      c.allNamespaces
        ? "No VirtualServers found.\n"
        : `No VirtualServers found in ${namespace} namespace.\n`,
    );
    return 0;
  }
  io.out.write(
    statusTable(items, { now: io.now(), allNamespaces: c.allNamespaces, wide: c.wide, paint }),
  );
  return 0;
}

async function puppetRun(
  kube: Kube,
  namespace: string,
  c: Extract<PluginCommand, { kind: "puppet-run" }>,
  io: PluginIO,
): Promise<number> {
  const path = serverPath(namespace, c.name);
  const current = await kube.get<VirtualServer>(path);
  const requested = nextRequestTime(current, io.now());
  await kube.mergePatch(path, {
    metadata: { annotations: { [PUPPET_RUN_REQUESTED_AT]: requested } },
  });
  io.out.write(`virtualserver ${namespace}/${c.name}: Puppet run requested (${requested})\n`);
  if (!c.wait) return 0;

  const deadline = io.now() + c.timeoutMs;
  let last = "";
  const { isKubeOutage } = await import("../controller/kube.js");
  for (;;) {
    let vs: VirtualServer | undefined;
    try {
      vs = await kube.get<VirtualServer>(path);
    } catch (err) {
      // An API server that is away for a moment (a restart, an overloaded control plane) does
      // not end the follow; the deadline does.
      if (!isKubeOutage(err)) throw err;
      const line = `API server not answering (${err.message}); retrying`;
      if (line !== last)
        io.err.write(`${new Date(io.now()).toISOString().slice(11, 19)}  ${line}\n`);
      last = line;
    }
    if (!vs) {
      if (io.now() >= deadline) return timedOut(c, namespace, io);
      await sleep(1000);
      continue;
    }
    const line = progressLine(vs);
    if (line !== last) {
      io.out.write(`${new Date(io.now()).toISOString().slice(11, 19)}  ${line}\n`);
      last = line;
    }
    const verdict = runVerdict(vs, requested);
    if (verdict !== "waiting") {
      io.out.write(
        `Puppet run on ${vs.spec.hostname} ${verdict === "applied" ? "applied" : "FAILED"}: ${puppetSummary(vs, io.now())}\n`,
      );
      return verdict === "applied" ? 0 : 1;
    }
    if (io.now() >= deadline) return timedOut(c, namespace, io);
    await sleep(1000);
  }
}

/**
 * Asks vsop to rebuild the server once: spec.rebuildRequestedAt set to a new time. The server's
 * VM is powered off and installed again; nothing is waited for (an install takes minutes).
 */
export async function rebuild(
  kube: Pick<Kube, "get" | "mergePatch">,
  namespace: string,
  name: string,
  io: Pick<PluginIO, "out" | "now">,
): Promise<number> {
  const path = serverPath(namespace, name);
  const current = await kube.get<VirtualServer>(path);
  const at = nextRebuildTime(current, io.now());
  await kube.mergePatch(path, { spec: { rebuildRequestedAt: at } });
  io.out.write(
    `virtualserver ${namespace}/${name}: rebuild requested (${at}); its VM ` +
      `${current.status?.vm?.moRef ? `${current.status.vm.moRef} ` : ""}is powered off and installed again.\n` +
      `Follow it with: kubectl vsop status ${name} -n ${namespace}\n`,
  );
  return 0;
}

function timedOut(
  c: Extract<PluginCommand, { kind: "puppet-run" }>,
  namespace: string,
  io: PluginIO,
): number {
  io.err.write(
    `kubectl-vsop: no Puppet run newer than the request finished within ${c.timeoutMs / 1000}s ` +
      `(kubectl vsop status ${c.name} -n ${namespace} shows where it stands)\n`,
  );
  return 1;
}

async function mco(c: Extract<PluginCommand, { kind: "mco" }>, io: PluginIO): Promise<number> {
  const { command, connection } = parseMcoArgs(c.mcoArgs, io.env);
  if (command.kind === "help") throw new UsageError("mco: nothing to do");
  const { code, value } = await execMco(command, connection);
  if (c.json) {
    io.out.write(`${JSON.stringify(value, null, 2)}\n`);
    return code;
  }
  const v = value as Record<string, unknown>;
  if ("error" in v) {
    io.err.write(`kubectl-vsop: ${c.host}: ${String(v.error)}: ${String(v.message)}\n`);
    return code;
  }
  if (c.action === "ping") {
    io.out.write(
      code === 0
        ? `${c.host} answered\n`
        : `${c.host} did not answer within ${connection.timeoutMs / 1000}s\n`,
    );
    return code;
  }
  const s = value as {
    changedResources: number;
    failedResources: number;
    outOfSyncResources: number;
    totalResources: number;
    totalTime: number;
    lastrun: number;
    configVersion: string | null;
  };
  const fields: [string, string][] = [
    ["Host", c.host],
    ["Last run", s.lastrun ? `${new Date(s.lastrun * 1000).toISOString()}` : "never"],
    ["Changed", String(s.changedResources)],
    ["Failed", String(s.failedResources)],
    ["Out of sync", String(s.outOfSyncResources)],
    ["Total", String(s.totalResources)],
    ["Time", `${s.totalTime.toFixed(1)}s`],
    ["Config version", s.configVersion ?? "-"],
  ];
  io.out.write(fields.map(([k, val]) => `${`${k}:`.padEnd(16)}${val}`).join("\n") + "\n");
  return code;
}

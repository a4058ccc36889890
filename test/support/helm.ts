// helm (built by hack/install.sh into the cache, at the version pinned there), kubectl
// kustomize, and a normal form of rendered manifests that compares Helm's output with
// kustomize's: objects keyed by kind/namespace/name, without the labels Helm adds.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import * as yaml from "js-yaml";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const CHART = path.join(ROOT, "deploy/helm/vsop");

export const HELM_VERSION = /^HELM_VERSION="(v[0-9.]+)"$/m.exec(
  readFileSync(path.join(ROOT, "hack/install.sh"), "utf8"),
)?.[1];

function cacheDir(): string {
  const env = process.env;
  return (
    env.VSOP_CACHE_DIR ??
    path.join(env.XDG_CACHE_HOME ?? path.join(env.HOME ?? "/root", ".cache"), "vsop")
  );
}

/** The helm binary: $HELM, else the one hack/install.sh built. */
export const HELM = process.env.HELM ?? path.join(cacheDir(), `helm-${HELM_VERSION}`);

/** Resolves once HELM exists. `make test` has hack/install.sh build helm in the background
 *  (VSOP_HELM=later): while that build's pid lives, this waits for it. */
export async function helmBuilt(timeoutMs = 20 * 60_000): Promise<void> {
  const pidFile = path.join(cacheDir(), "helm-build.pid");
  const deadline = Date.now() + timeoutMs;
  const log = path.join(cacheDir(), "helm-build.log");
  while (!existsSync(HELM)) {
    const pid = Number(existsSync(pidFile) ? readFileSync(pidFile, "utf8") : 0);
    if (!pid || !alive(pid))
      throw new Error(
        `${HELM} is missing and no build of it is under way: run make install (its log: ${log})`,
      );
    if (Date.now() > deadline)
      throw new Error(`${HELM} is still being built after ${timeoutMs / 60_000} min (log: ${log})`);
    await sleep(2000);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const run = (cmd: string, args: string[]): string =>
  execFileSync(cmd, args, {
    encoding: "utf8",
    maxBuffer: 64 << 20,
    stdio: ["ignore", "pipe", "pipe"],
  });

export const helm = (args: string[]): string => run(HELM, args);

/** `helm template` of the chart with --set values, CRDs included. */
export function helmTemplate(set: Record<string, string> = {}, extra: string[] = []): string {
  const sets = Object.entries(set).flatMap(([k, v]) => ["--set", `${k}=${v}`]);
  return helm(["template", "vsop", CHART, "--include-crds", ...sets, ...extra]);
}

export const kustomize = (dir = path.join(ROOT, "deploy")): string =>
  run("kubectl", ["kustomize", dir]);

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  [key: string]: unknown;
}

/** Labels Helm (and the chart's helpers) add to every object; kustomize's own stay. */
export const HELM_LABELS = [
  "helm.sh/chart",
  "app.kubernetes.io/managed-by",
  "app.kubernetes.io/instance",
  "app.kubernetes.io/version",
];

export const parseAll = (text: string): K8sObject[] =>
  yaml.loadAll(text).filter((d): d is K8sObject => d !== null && d !== undefined);

export const key = (o: K8sObject): string =>
  `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;

/** Objects without Helm's labels and annotations, empty label/annotation maps dropped, sorted. */
export function normalise(text: string): K8sObject[] {
  return parseAll(text)
    .map((o) => {
      const copy = structuredClone(o);
      const meta = copy.metadata;
      for (const l of HELM_LABELS) delete meta.labels?.[l];
      for (const a of Object.keys(meta.annotations ?? {}))
        if (a.startsWith("meta.helm.sh/")) delete meta.annotations![a];
      if (meta.labels && Object.keys(meta.labels).length === 0) delete meta.labels;
      if (meta.annotations && Object.keys(meta.annotations).length === 0) delete meta.annotations;
      return copy;
    })
    .sort((a, b) => key(a).localeCompare(key(b)));
}

/** One object by kind and name from rendered text. */
export function find(text: string, kind: string, name: string): K8sObject {
  const o = parseAll(text).find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} in the render`);
  return o;
}

// How the operator reaches the API server: its URL, TLS material and a bearer token, from the
// in-cluster ServiceAccount or a kubeconfig file with static credentials. Read here rather than
// through @kubernetes/client-node, whose loader imports the whole generated API: ~75 MiB of RSS,
// half the operator's memory budget. A kubeconfig that needs more (exec plugins, auth providers,
// basic auth, a proxy, several files in $KUBECONFIG) is still handed to client-node.
import { existsSync, readFileSync } from "node:fs";
import type https from "node:https";
import { isIPv6 } from "node:net";
import os from "node:os";
import path from "node:path";
import * as yaml from "js-yaml";

/** What the Kubernetes client needs; @kubernetes/client-node's KubeConfig has the same shape. */
export interface ClusterAccess {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

interface StaticCredentials {
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecure?: boolean;
  token?: string;
  /** Read on every use: a projected ServiceAccount token is rotated in place. */
  tokenFile?: string;
}

class StaticAccess implements ClusterAccess {
  constructor(readonly creds: StaticCredentials) {}

  getCurrentCluster(): { server: string } {
    return { server: this.creds.server };
  }

  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void> {
    const c = this.creds;
    if (c.ca) opts.ca = c.ca;
    if (c.cert) opts.cert = c.cert;
    if (c.key) opts.key = c.key;
    if (c.insecure) opts.rejectUnauthorized = false;
    const token = c.tokenFile ? readFileSync(c.tokenFile, "utf8").trim() : c.token;
    if (token) opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
    return Promise.resolve();
  }
}

/** The operator's access: --kubeconfig, else in-cluster, else $KUBECONFIG or ~/.kube/config. */
export async function loadClusterAccess(file?: string): Promise<ClusterAccess> {
  if (file) return fromFile(file);
  if (process.env.KUBERNETES_SERVICE_HOST) return inCluster();
  const env = process.env.KUBECONFIG;
  if (env && !env.includes(path.delimiter)) return fromFile(env);
  const home = path.join(os.homedir(), ".kube", "config");
  if (!env && existsSync(home)) return fromFile(home);
  return clientNode((kc) => kc.loadFromDefault());
}

/** As client-go's rest.InClusterConfig (and client-node's loadFromCluster). */
export function inCluster(dir = SA_DIR): ClusterAccess {
  const host = process.env.KUBERNETES_SERVICE_HOST ?? "";
  const port = process.env.KUBERNETES_SERVICE_PORT ?? "443";
  const scheme = ["80", "8080", "8001"].includes(port) ? "http" : "https";
  return new StaticAccess({
    server: `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    ca: existsSync(`${dir}/ca.crt`) ? readFileSync(`${dir}/ca.crt`) : undefined,
    tokenFile: `${dir}/token`,
  });
}

interface Named<T> {
  name: string;
  [k: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}
type Fields = Record<string, unknown>;

/** Fields that need client-node's machinery. */
const DELEGATED_USER = ["exec", "auth-provider", "username", "password"];
const DELEGATED_CLUSTER = ["proxy-url", "tls-server-name"];

export async function fromFile(file: string): Promise<ClusterAccess> {
  const doc = (yaml.load(readFileSync(file, "utf8")) ?? {}) as {
    "current-context"?: string;
    contexts?: Named<Fields>[];
    clusters?: Named<Fields>[];
    users?: Named<Fields>[];
  };
  const ctxName = doc["current-context"];
  const ctx = doc.contexts?.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`kubeconfig ${file}: current-context "${ctxName}" names no context`);
  const cluster = doc.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster?.server)
    throw new Error(`kubeconfig ${file}: context "${ctxName}" names no cluster with a server`);
  const user = doc.users?.find((u) => u.name === ctx.user)?.user ?? {};
  if (
    DELEGATED_USER.some((k) => user[k] !== undefined) ||
    DELEGATED_CLUSTER.some((k) => cluster[k] !== undefined)
  )
    return clientNode((kc) => kc.loadFromFile(file));

  const dir = path.dirname(path.resolve(file));
  /** client-node's bufferFromFileOrString: inline base64 data wins over a file path. */
  const material = (o: Fields, key: string): Buffer | undefined => {
    const data = o[`${key}-data`];
    if (typeof data === "string" && data) return Buffer.from(data, "base64");
    const f = o[key];
    return typeof f === "string" && f ? readFileSync(path.resolve(dir, f)) : undefined;
  };
  const str = (v: unknown) => (typeof v === "string" && v ? v : undefined);
  return new StaticAccess({
    server: String(cluster.server),
    ca: material(cluster, "certificate-authority"),
    insecure: cluster["insecure-skip-tls-verify"] === true,
    cert: material(user, "client-certificate"),
    key: material(user, "client-key"),
    token: str(user.token),
    tokenFile: str(user.tokenFile) && path.resolve(dir, str(user.tokenFile)!),
  });
}

async function clientNode(
  load: (kc: import("@kubernetes/client-node").KubeConfig) => void,
): Promise<ClusterAccess> {
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  load(kc);
  return kc;
}

// The operator's first step, before the rest of it loads: the Kubernetes client and the
// VirtualServer and VirtualServerClass caches, whose lists go out at once. An API server before
// 1.33 builds a list of 10,000 servers for seconds before it sends a byte; loading the operator's
// modules and wiring its parts (~0.5 s) happens meanwhile instead of before.
import v8 from "node:v8";
import type { Logger } from "pino";
import { listShardSelectors, START_LISTS, START_LISTS_IN_FLIGHT } from "./api/list-shards.js";
import { GROUP, VERSION, VS_PLURAL, VSC_PLURAL } from "./api/types.js";
import type { VirtualServer, VirtualServerClass } from "./api/types.js";
import type { RunConfig } from "./cli/run-flags.js";
import { Informer } from "./controller/informer.js";
import { Kube } from "./controller/kube.js";
import { loadClusterAccess } from "./controller/kubeconfig.js";
import { createLogger } from "./observability/logger.js";
import { userAgent } from "./version.js";

export interface Caches {
  logger: Logger;
  kube: Kube;
  servers: Informer<VirtualServer>;
  classes: Informer<VirtualServerClass>;
}

export async function startCaches(run: RunConfig): Promise<Caches> {
  // Memory over speed, for a cache of 10,000 servers in 150 MiB: V8 would grow its young
  // generation to 2 x 64 MiB under the first list's allocation burst and keep it. Set before
  // that burst, so that it holds however the operator is launched; the cost is more (short)
  // collections. (--optimize-for-size as well cost ~0.2 s of CPU in that burst, on a machine
  // the API server's encoding already keeps busy, for no memory the scale bench could see.)
  v8.setFlagsFromString("--semi-space-growth-factor=1");
  const logger = createLogger(run.logLevel, run.logFormat);
  const kube = new Kube(await loadClusterAccess(run.kubeconfig));
  kube.userAgent = userAgent();

  const base = `/apis/${GROUP}/${VERSION}`;
  const servers = new Informer<VirtualServer>(kube, {
    path: run.namespace
      ? `${base}/namespaces/${run.namespace}/${VS_PLURAL}`
      : `${base}/${VS_PLURAL}`,
    labelSelector: run.labelSelector,
    logger,
    // Plain lists, not streamed ones: from its watch cache the API server builds a list for less
    // CPU than it spends streaming the same objects as watch events (10,000 servers on 2 cores:
    // 2.1-3.5 s against 4.1-5.4 s), and at start it shares the machine's cores with this process.
    // One per shard, two at a time: each is parsed while the server builds the next.
    shards: listShardSelectors(START_LISTS),
    shardsInFlight: START_LISTS_IN_FLIGHT,
  });
  const classes = new Informer<VirtualServerClass>(kube, {
    path: `${base}/${VSC_PLURAL}`,
    logger,
    streamingList: true,
  });
  logger.info(
    {
      namespace: run.namespace || "(all)",
      labelSelector: run.labelSelector,
      workers: run.workers,
    },
    "vsop starting",
  );
  classes.start();
  servers.start();
  // Loading the rest blocks the event loop for a while: the requests go out first (a TLS
  // handshake needs the loop too). A list that cannot be sent soon does not hold the start up.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all([servers.whenListSent(), classes.whenListSent()]),
    new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
  ]);
  clearTimeout(timer);
  return { logger, kube, servers, classes };
}

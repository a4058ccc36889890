// `vsop run`: wires informers, the work queue, the reconciler and the HTTP endpoints together,
// and shuts them down in order on SIGTERM.
import os from "node:os";
import type http from "node:http";
import { API_VERSION, type VirtualServer, type VirtualServerClass } from "./api/types.js";
import { currentSignal } from "./abort.js";
import { readFile } from "node:fs/promises";
import { parseBindAddress, UsageError, type RunConfig } from "./cli/run-flags.js";
import { Controller } from "./controller/controller.js";
import { EventRecorder } from "./controller/events.js";
import { Informer, keyOf } from "./controller/informer.js";
import type { Caches } from "./caches.js";
import { LeaderElector } from "./controller/leader.js";
import { WorkQueue } from "./controller/queue.js";
import { dnsLookup, type Lookup } from "./naming/lookup.js";
import { closeServer, healthRoutes, metricsRoutes, serve } from "./observability/http.js";
import { Metrics } from "./observability/metrics.js";
import { namingStep } from "./reconcile/steps/naming-step.js";
import { vmStep } from "./reconcile/steps/vm-step.js";
import { inventorySteps } from "./reconcile/steps/inventory-step.js";
import { affinitySteps } from "./reconcile/steps/affinity-step.js";
import { PowerCycleSlots } from "./reconcile/steps/power-cycle-slots.js";
import { rebuildStep } from "./reconcile/steps/rebuild-step.js";
import type { RecordWarning } from "./reconcile/boot/boot-method.js";
import { handoffStep, installedStep, prepareStep } from "./reconcile/steps/install-steps.js";
import {
  INSTALL_RECORDS,
  InstallTokens,
  type InstallToken,
  type SecretObject,
} from "./reconcile/clients/install-tokens.js";
import {
  certificateStep,
  cleanCertificate,
  PuppetCAPool,
} from "./reconcile/steps/certificate-step.js";
import { ConfigReader } from "./reconcile/clients/secrets.js";
import { VCenterPool } from "./reconcile/clients/vcenters.js";
import { McoPool } from "./reconcile/clients/mco-pool.js";
import { mcoDiscovery, puppetStep } from "./reconcile/steps/puppet-step.js";
import { powerStep } from "./reconcile/steps/power-step.js";
import { PendingCalls } from "./reconcile/engine/pending-calls.js";
import { RunSlots, runInFlight } from "./reconcile/steps/puppet-runs.js";
import type { ReconcileContext } from "./reconcile/engine/context.js";
import { startProvisioningServer } from "./reconcile/boot/provisioning-server.js";
import { RetryLater, VirtualServerReconciler } from "./reconcile/engine/virtualserver.js";
import { ServerIndex } from "./reconcile/engine/server-index.js";

/** A secret from a file (a mounted Secret), trimmed; a usable one or a clear error. */
async function readSecretFile(file: string, flag: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(file, "utf8")).trim();
  } catch (err) {
    throw new UsageError(`--${flag}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!/^[\x21-\x7e]{16,512}$/.test(text))
    throw new UsageError(
      `--${flag}: ${file} must hold one secret of 16 to 512 printable characters`,
    );
  return text;
}

/** Only changes a reconcile acts on; our own status writes do not wake the queue. */
function specOrMetaChanged(a: VirtualServer, b: VirtualServer): boolean {
  const m = (o: VirtualServer) =>
    JSON.stringify([
      o.metadata.generation,
      o.metadata.deletionTimestamp,
      o.metadata.finalizers,
      o.metadata.labels,
      o.metadata.annotations,
    ]);
  return m(a) !== m(b);
}

/** Runs the operator on caches that startCaches (caches.ts) has started listing. */
export async function runOperator(run: RunConfig, caches: Caches): Promise<number> {
  const { logger, kube, servers, classes } = caches;
  const metrics = new Metrics();
  kube.countRequests((verb, _path, code) => metrics.kubeRequests.inc({ verb, code }));
  const queue = new WorkQueue(
    { baseMs: run.backoffBaseMs, maxMs: run.backoffMaxMs },
    metrics.controller.queueObserver,
  );
  metrics.watch({ queue, workers: run.workers, servers: () => servers.list() });
  // Reconciles look other servers up by hostname, address, class or group, never by a scan.
  const index = new ServerIndex(servers);

  const lookups = new Map<string, Lookup>();
  const lookup = (dnsServers: string[]) => {
    const k = dnsServers.join(",");
    if (!lookups.has(k)) lookups.set(k, dnsLookup(dnsServers));
    return lookups.get(k)!;
  };

  const recorder = new EventRecorder(kube, logger, os.hostname(), {
    onDrop: () => metrics.eventsDropped.inc(),
  });
  const config = new ConfigReader(kube, run.operatorNamespace);
  // A VM's changes and the end of a server's vSphere task put the server's key on the queue.
  const pool = new VCenterPool(
    config,
    logger,
    (method) => metrics.soapCalls.inc({ method }),
    (key) => {
      if (servers.get(key)) queue.add(key);
    },
  );
  // Install records by watch, so the provisioning endpoint answers from memory.
  const installRecords = new Informer<SecretObject>(kube, {
    path: `/api/v1/namespaces/${run.operatorNamespace}/secrets`,
    labelSelector: INSTALL_RECORDS,
    logger,
  });
  const tokens = new InstallTokens(kube, run.operatorNamespace, installRecords);
  const mcos = new McoPool(
    config,
    logger,
    (agent, action, outcome) => metrics.mcoRequests.inc({ agent, action, outcome }),
    {
      onDrop: (reason) => metrics.mcoRepliesDropped.inc({ reason }),
      maxReplyBytes: run.mcollectiveMaxReplyBytes,
    },
  );
  const autosignSecret = run.autosignSecretFile
    ? await readSecretFile(run.autosignSecretFile, "autosign-secret-file")
    : undefined;
  const provisioningBind = parseBindAddress(
    run.provisioningBindAddress,
    "provisioning-bind-address",
  );
  // MCollective calls run in the background; a reply or timeout puts the server's key back.
  const calls = new PendingCalls({
    wake: (key) => queue.add(key),
    backoff: { baseMs: run.backoffBaseMs, maxMs: run.backoffMaxMs },
  });
  // Puppet runs in flight per class across all workers; after a restart, status says which run.
  const runSlots = new RunSlots({
    wake: (key) => queue.add(key),
    inFlight: (className) =>
      index
        .ofClass(className)
        .filter((vs) => runInFlight(vs.status?.puppet))
        .map(keyOf),
  });
  const identityKeyOf = (ctx: ReconcileContext) =>
    tokens.identityKey(ctx.vs.metadata.uid!, ctx.status.install?.completedAt);
  const cas = new PuppetCAPool(config);
  const certificates = {
    record: (uid: string, fresh: boolean) =>
      fresh ? tokens.get(uid) : Promise.resolve(tokens.cached(uid)),
    ca: (cls: VirtualServerClass) => cas.get(cls),
  };
  const install = {
    pool,
    beforeReinstall: (ctx: ReconcileContext, previous: InstallToken) =>
      cleanCertificate(certificates, ctx, () => Promise.resolve(previous)),
    tokens,
    config,
    discover: mcoDiscovery(mcos, calls, identityKeyOf),
    onInstalled: (method: string, seconds: number) =>
      metrics.installDuration.observe({ method }, seconds),
    provisioningURL:
      run.provisioningURL ??
      `http://${provisioningBind?.host ?? os.hostname()}:${provisioningBind?.port ?? 8082}`,
  };
  const inventory = inventorySteps(pool);
  const affinity = affinitySteps({
    pool,
    inGroup: (apptype, environment) => index.inGroup(apptype, environment),
    getClass: (name) => classes.get(name),
    wake: (key) => queue.add(key),
  });
  const warn: RecordWarning = (ctx, reason, message) =>
    recorder.record(
      { apiVersion: API_VERSION, kind: "VirtualServer", metadata: ctx.vs.metadata },
      "Warning",
      reason,
      message,
    );
  const reconciler = new VirtualServerReconciler({
    kube,
    logger,
    recorder,
    getServer: (key) => servers.get(key),
    getClass: (name) => classes.get(name),
    steps: [
      namingStep({ lookup, servers: index }),
      inventory.check,
      vmStep(pool, new PowerCycleSlots((cls) => index.ofClass(cls))),
      inventory.sync,
      affinity.sync,
      rebuildStep({
        install,
        record: warn,
        // The reinstalled agent asks for a new certificate: the old one is revoked and cleaned.
        beforeReinstall: async (ctx) => {
          await cleanCertificate(certificates, ctx, () => tokens.get(ctx.vs.metadata.uid!));
          return undefined;
        },
      }),
      prepareStep(install),
      installedStep(install),
      handoffStep(install, warn),
      powerStep(pool),
      puppetStep(
        mcos,
        calls,
        identityKeyOf,
        (seconds, failed) => {
          metrics.puppetRunDuration.observe(seconds);
          metrics.puppetRuns.inc({ result: failed ? "failed" : "success" });
        },
        runSlots,
      ),
      certificateStep(certificates),
      affinity.report,
    ],
    onStepError: (step, reason) => metrics.stepErrors.inc({ step, reason }),
  });

  servers.on((event, obj, old, key) => {
    if (event === "delete") {
      calls.forget(key);
      runSlots.release(key);
    }
    if (event === "update" && old && !specOrMetaChanged(old, obj)) return;
    queue.add(key);
  });
  classes.on((_event, cls) => {
    for (const vs of index.ofClass(cls.metadata.name)) queue.add(keyOf(vs));
  });

  const controller = new Controller(
    queue,
    async (key) => {
      try {
        return await reconciler.reconcile(key);
      } catch (err) {
        // An aborted reconcile is logged once by the controller.
        if (!(err instanceof RetryLater) && !currentSignal()?.aborted)
          logger.error({ virtualserver: key, err }, "reconcile failed");
        throw err;
      }
    },
    {
      workers: run.workers,
      resyncSeconds: run.resyncPeriodSeconds,
      reconcileTimeoutMs: run.reconcileTimeoutMs,
      logger,
      keys: () => servers.list().map(keyOf),
      observe: (outcome, seconds) => {
        metrics.controller.reconciled(outcome, seconds);
        // vsop's own counter predates controller-runtime's names: one "requeue" for both.
        metrics.reconciles.inc({ outcome: outcome === "requeue_after" ? "requeue" : outcome });
        metrics.reconcileDuration.observe(seconds);
      },
    },
  );

  const endpoints: http.Server[] = [];
  const health = parseBindAddress(run.healthProbeBindAddress, "health-probe-bind-address");
  const ready = () => servers.synced && classes.synced;
  if (health) endpoints.push(await serve(healthRoutes(ready), health));
  const metricsBind = parseBindAddress(run.metricsBindAddress, "metrics-bind-address");
  if (metricsBind) endpoints.push(await serve(metricsRoutes(metrics), metricsBind));
  if (provisioningBind) {
    endpoints.push(
      await startProvisioningServer(provisioningBind, {
        tokens,
        config,
        logger,
        provisioningURL: install.provisioningURL,
        server: (ns, name) => servers.get(`${ns}/${name}`),
        cls: (name) => classes.get(name),
        built: (ns, name) => queue.add(`${ns}/${name}`),
        progressed: (ns, name) => queue.add(`${ns}/${name}`),
        ...(autosignSecret
          ? {
              autosign: {
                secret: autosignSecret,
                servers: () => servers.list(),
                decided: (signed: boolean, reason: string) =>
                  metrics.autosign.inc({ result: signed ? "signed" : "refused", reason }),
              },
            }
          : {}),
      }),
    );
  }

  installRecords.start();
  await Promise.all([classes.waitForSync(), servers.waitForSync()]);
  logger.info({ servers: servers.list().length, classes: classes.list().length }, "caches synced");

  let lostLeadership: () => void = () => undefined;
  const stopSignal = new Promise<"signal" | "lost">((resolve) => {
    process.once("SIGTERM", () => resolve("signal"));
    process.once("SIGINT", () => resolve("signal"));
    lostLeadership = () => resolve("lost");
  });
  const elector = run.leaderElect
    ? new LeaderElector(kube, {
        namespace: run.leaderElectionNamespace,
        name: run.leaderElectionID,
        leaseDurationSeconds: run.leaseDurationSeconds,
        logger,
      })
    : undefined;
  if (elector) {
    void elector.acquire(lostLeadership).then(() => {
      if (!elector.isLeader) return;
      metrics.isLeader.set(1);
      controller.start();
    });
  } else {
    metrics.isLeader.set(1); // the only controller there is: alerts on "no leader" hold
    controller.start();
  }

  const why = await stopSignal;
  if (why === "lost") {
    // As client-go's leader election: another replica may be leading already, so not one more
    // write from here. In-flight reconciles are not drained; the restart converges.
    logger.error("leadership lost: exiting at once");
    logger.flush();
    process.exit(1);
  }
  logger.info({ reason: "signal" }, "shutting down: finishing in-flight reconciles");
  await Promise.all([servers.stop(), classes.stop(), installRecords.stop()]);
  await controller.stop();
  await recorder.flush(5_000); // the last transitions' Events
  calls.stop();
  metrics.isLeader.set(0);
  await elector?.release();
  await Promise.all(endpoints.map(closeServer));
  await Promise.all([pool.stop(), mcos.stop()]);
  cas.stop();
  logger.info("stopped");
  logger.flush();
  return 0;
}

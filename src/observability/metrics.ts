// Prometheus metrics (prom-client): what an operator's dashboard and alerts need. Where the
// ecosystem has names, vsop uses them: Node.js process metrics as stock dashboards expect them
// (process_*, nodejs_*), controller-runtime's reconcile and client-go's workqueue metrics
// (controller-metrics.ts). The rest is vsop_*. No label carries a host name or anything secret.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { VirtualServer } from "../api/types.js";
import { ControllerMetrics, type QueueStats } from "./controller-metrics.js";
import { countByPhase, countNotReady } from "./fleet.js";

/** What the scrape-time gauges read. */
export interface MetricSources {
  queue: QueueStats & { readonly length: number };
  workers: number;
  /** The VirtualServers in the informer cache. */
  servers: () => readonly VirtualServer[];
}

export class Metrics {
  readonly registry = new Registry();
  private sources: MetricSources | undefined;
  /** controller_runtime_* and workqueue_* for the VirtualServer controller. */
  readonly controller = new ControllerMetrics(this.registry, "virtualserver");
  readonly reconciles = new Counter({
    name: "vsop_reconciles_total",
    help: "Reconciles by outcome (success, requeue, error).",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly stepErrors = new Counter({
    name: "vsop_reconcile_errors_total",
    help: "Reconcile step failures by step and condition reason.",
    labelNames: ["step", "reason"] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: "vsop_reconcile_duration_seconds",
    help: "Duration of one reconcile.",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: "vsop_workqueue_depth",
    help: "Keys waiting in the work queue (not counting keys re-added while in flight).",
    registers: [this.registry],
    collect: () => {
      if (this.sources) this.queueDepth.set(this.sources.queue.length);
    },
  });
  readonly soapCalls = new Counter({
    name: "vsop_vsphere_soap_requests_total",
    help: "vSphere SOAP requests by method.",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });
  readonly kubeRequests = new Counter({
    name: "vsop_kube_requests_total",
    help: "Kubernetes API requests by verb and HTTP status code ('error': no response).",
    labelNames: ["verb", "code"] as const,
    registers: [this.registry],
  });
  readonly mcoRequests = new Counter({
    name: "vsop_mcollective_requests_total",
    help: "MCollective requests by agent, action and outcome.",
    labelNames: ["agent", "action", "outcome"] as const,
    registers: [this.registry],
  });
  readonly mcoRepliesDropped = new Counter({
    name: "vsop_mcollective_replies_dropped_total",
    help: "Messages on the MCollective reply queue dropped undelivered, by reason (oversized, malformed, unknown_request, unexpected_sender, bad_signature, duplicate).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly eventsDropped = new Counter({
    name: "vsop_events_dropped_total",
    help: "Kubernetes Events not written because too many were waiting to be written.",
    registers: [this.registry],
  });
  readonly autosign = new Counter({
    name: "vsop_puppet_autosign_total",
    help: "Answers to the Puppet master's autosign questions: result signed or refused, and why (reason Signed, UnknownName, WrongChallenge, ChallengeSpent, ...).",
    labelNames: ["result", "reason"] as const,
    registers: [this.registry],
  });
  readonly isLeader = new Gauge({
    name: "vsop_leader",
    help: "1 when this process runs the controller: it holds the leader lease, or runs without leader election.",
    registers: [this.registry],
  });
  readonly virtualServers = new Gauge({
    name: "vsop_virtualservers",
    help: "VirtualServers in this process's cache by status.phase (every replica reports; aggregate with max).",
    labelNames: ["phase"] as const,
    registers: [this.registry],
    collect: () => {
      if (!this.sources) return;
      for (const [phase, n] of countByPhase(this.sources.servers()))
        this.virtualServers.set({ phase }, n);
    },
  });
  readonly notReady = new Gauge({
    name: "vsop_virtualservers_not_ready",
    help: "VirtualServers in this process's cache whose Ready condition is not True, by its reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
    collect: () => {
      if (!this.sources) return;
      this.notReady.reset(); // a reason no server has any more goes away
      for (const [reason, n] of countNotReady(this.sources.servers()))
        this.notReady.set({ reason }, n);
    },
  });
  readonly installDuration = new Histogram({
    name: "vsop_install_duration_seconds",
    help: "Power-on to installed, observed once per install, by boot method.",
    labelNames: ["method"] as const,
    buckets: [30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200],
    registers: [this.registry],
  });
  readonly puppetRunDuration = new Histogram({
    name: "vsop_puppet_run_duration_seconds",
    help: "Puppet run requested to finished (the node's clock), observed once per run.",
    buckets: [5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600],
    registers: [this.registry],
  });
  readonly puppetRuns = new Counter({
    name: "vsop_puppet_runs_total",
    help: "Finished Puppet runs that vsop requested, by result (failed: failed resources, or none counted).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  constructor() {
    // No prefix: stock Node.js dashboards look for process_cpu_seconds_total, nodejs_heap_*.
    collectDefaultMetrics({ register: this.registry });
    for (const result of ["success", "failed"]) this.puppetRuns.inc({ result }, 0);
  }

  /** Sets what the scrape-time gauges read: the work queue and the informer cache. */
  watch(sources: MetricSources): void {
    this.sources = sources;
    this.controller.watch(sources.queue, sources.workers);
  }
}

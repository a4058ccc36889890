// Prometheus metrics (prom-client): what an operator's dashboard and alerts need.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class Metrics {
  readonly registry = new Registry();
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
    help: "Keys waiting in the work queue.",
    registers: [this.registry],
  });
  readonly soapCalls = new Counter({
    name: "vsop_vsphere_soap_requests_total",
    help: "vSphere SOAP requests by method.",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });
  readonly kubeRequests = new Counter({
    name: "vsop_kube_requests_total",
    help: "Kubernetes API requests by verb.",
    labelNames: ["verb"] as const,
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
    help: "Messages on the MCollective reply queue dropped undelivered, by reason (oversized, malformed, unknown_request, bad_signature, duplicate).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly isLeader = new Gauge({
    name: "vsop_leader",
    help: "1 when this process holds the leader lease.",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "vsop_process_" });
  }
}

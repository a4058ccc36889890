// controller-runtime's reconcile metrics and client-go's workqueue metrics, under their names,
// labels and buckets, so dashboards and alerts written for Go operators work on vsop unchanged.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Outcome } from "../controller/controller.js";
import type { QueueObserver } from "../controller/queue.js";

/** What the scrape-time gauges read from the work queue. */
export interface QueueStats {
  readonly depth: number;
  readonly inFlight: number;
  inFlightSeconds(): number[];
}

// controller-runtime's reconcile_time_seconds buckets.
const RECONCILE_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1,
  1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
];
// client-go's workqueue buckets (ExponentialBuckets(10e-9, 10, 12)), as exact decimals.
const QUEUE_BUCKETS = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000];
const OUTCOMES: Outcome[] = ["success", "error", "requeue", "requeue_after"];

/** A gauge whose value is read when Prometheus scrapes, not kept up to date by every change. */
function scrapeGauge(
  registry: Registry,
  name: string,
  help: string,
  labels: Record<string, string>,
  read: () => number | undefined,
): Gauge {
  return new Gauge({
    name,
    help,
    labelNames: Object.keys(labels),
    registers: [registry],
    collect() {
      const v = read();
      if (v !== undefined) this.set(labels, v);
    },
  });
}

export class ControllerMetrics {
  private queue: QueueStats | undefined;
  private workers: number | undefined;
  private readonly reconcileTotal: Counter<"controller" | "result">;
  private readonly reconcileErrors: Counter<"controller">;
  private readonly reconcileTime: Histogram<"controller">;
  /** Pass to the WorkQueue: counts adds and retries, times waiting and work. */
  readonly queueObserver: QueueObserver;

  /** `name` is the controller's and its queue's (the `controller` and `name` labels). */
  constructor(
    registry: Registry,
    readonly name: string,
  ) {
    const registers = [registry];
    const c = { controller: name };
    const q = { name, controller: name };

    this.reconcileTotal = new Counter({
      name: "controller_runtime_reconcile_total",
      help: "Total number of reconciliations per controller",
      labelNames: ["controller", "result"],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: "controller_runtime_reconcile_errors_total",
      help: "Total number of reconciliation errors per controller",
      labelNames: ["controller"],
      registers,
    });
    this.reconcileTime = new Histogram({
      name: "controller_runtime_reconcile_time_seconds",
      help: "Length of time per reconciliation per controller",
      labelNames: ["controller"],
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    // As controller-runtime: every series exists from the start, so rate() sees the first one.
    for (const result of OUTCOMES) this.reconcileTotal.inc({ ...c, result }, 0);
    this.reconcileErrors.inc(c, 0);
    scrapeGauge(
      registry,
      "controller_runtime_active_workers",
      "Number of currently used workers per controller",
      c,
      () => this.queue?.inFlight,
    );
    scrapeGauge(
      registry,
      "controller_runtime_max_concurrent_reconciles",
      "Maximum number of concurrent reconciles per controller",
      c,
      () => this.workers,
    );

    const adds = new Counter({
      name: "workqueue_adds_total",
      help: "Total number of adds handled by workqueue",
      labelNames: ["name", "controller"],
      registers,
    });
    const retries = new Counter({
      name: "workqueue_retries_total",
      help: "Total number of retries handled by workqueue",
      labelNames: ["name", "controller"],
      registers,
    });
    const latency = new Histogram({
      name: "workqueue_queue_duration_seconds",
      help: "How long in seconds an item stays in workqueue before being requested",
      labelNames: ["name", "controller"],
      buckets: QUEUE_BUCKETS,
      registers,
    });
    const work = new Histogram({
      name: "workqueue_work_duration_seconds",
      help: "How long in seconds processing an item from workqueue takes.",
      labelNames: ["name", "controller"],
      buckets: QUEUE_BUCKETS,
      registers,
    });
    adds.inc(q, 0);
    retries.inc(q, 0);
    this.queueObserver = {
      added: () => adds.inc(q),
      retried: () => retries.inc(q),
      started: (s) => latency.observe(q, s),
      finished: (s) => work.observe(q, s),
    };
    scrapeGauge(
      registry,
      "workqueue_depth",
      "Current depth of workqueue",
      q,
      () => this.queue?.depth,
    );
    scrapeGauge(
      registry,
      "workqueue_unfinished_work_seconds",
      "How many seconds of work has been done that is in progress and hasn't been observed by " +
        "work_duration. Large values indicate stuck threads. One can deduce the number of stuck " +
        "threads by observing the rate at which this increases.",
      q,
      () => this.queue && sum(this.queue.inFlightSeconds()),
    );
    scrapeGauge(
      registry,
      "workqueue_longest_running_processor_seconds",
      "How many seconds has the longest running processor for workqueue been running.",
      q,
      () => this.queue && Math.max(0, ...this.queue.inFlightSeconds()),
    );
  }

  /** Reads the queue's depth and in-flight work on scrape; `workers` is the worker count. */
  watch(queue: QueueStats, workers: number): void {
    this.queue = queue;
    this.workers = workers;
  }

  /** Counts one reconcile by outcome and times it. */
  reconciled(outcome: Outcome, seconds: number): void {
    this.reconcileTotal.inc({ controller: this.name, result: outcome });
    if (outcome === "error") this.reconcileErrors.inc({ controller: this.name });
    this.reconcileTime.observe({ controller: this.name }, seconds);
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

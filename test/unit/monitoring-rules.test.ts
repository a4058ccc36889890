// deploy/monitoring: the alert rules pass their promtool tests, and those tests fail when a rule
// breaks (each mutation below must be caught); the PrometheusRule carries exactly rules.yaml;
// the component stays out of deploy/ and renders on top of it; every metric the rules and the
// dashboard query is one vsop exports, in valid PromQL.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as yaml from "js-yaml";
import { Metrics } from "../../src/observability/metrics.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const DIR = path.join(ROOT, "deploy/monitoring");

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
}
interface RuleFile {
  groups: { name: string; rules: Rule[] }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

const rules = (): RuleFile =>
  yaml.load(readFileSync(path.join(DIR, "rules.yaml"), "utf8")) as RuleFile;
const alerts = (f: RuleFile) => f.groups.flatMap((g) => g.rules).filter((r) => r.alert);

function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (hack/install.sh installs it)`);
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

const kustomize = (dir: string, extra: string[] = []): K8sObject[] => {
  const r = run("kubectl", ["kustomize", ...extra, dir]);
  assert.ok(r.ok, r.out);
  return yaml.loadAll(r.out).filter((d): d is K8sObject => !!d);
};

/** Runs the shipped promtool tests against `file` as rules.yaml, in a scratch folder. */
function promtoolTest(file: RuleFile | undefined): { ok: boolean; out: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "vsop-rules-"));
  try {
    copyFileSync(path.join(DIR, "rules_test.yaml"), path.join(dir, "rules_test.yaml"));
    if (file) writeFileSync(path.join(dir, "rules.yaml"), yaml.dump(file, { lineWidth: -1 }));
    else copyFileSync(path.join(DIR, "rules.yaml"), path.join(dir, "rules.yaml"));
    return run("promtool", ["test", "rules", path.join(dir, "rules_test.yaml")]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the shipped promtool tests pass", () => {
  const r = promtoolTest(undefined);
  assert.ok(r.ok, r.out);
  assert.match(r.out, /SUCCESS/);
});

test("every alert has a test that fails without it", () => {
  for (const { alert } of alerts(rules())) {
    const file = rules();
    for (const g of file.groups) g.rules = g.rules.filter((r) => r.alert !== alert);
    const r = promtoolTest(file);
    assert.equal(r.ok, false, `no promtool test notices ${alert} is gone`);
    assert.match(r.out, new RegExp(`alertname: ${alert}\\b`));
  }
});

/** A broken rule: its alert, the text of its expr (or `for`) and what replaces it. */
const MUTATIONS: { alert: string; field: "expr" | "for"; from: string; to: string }[] = [
  // A typo in the reason: never fires.
  { alert: "VsopInstallStuck", field: "expr", from: '"InstallTimedOut"', to: '"InstallTimeout"' },
  // Any not-ready reason: fires for servers that are merely installing.
  { alert: "VsopInstallStuck", field: "expr", from: '{reason="InstallTimedOut"}', to: "" },
  // No grace period: fires at the first sample.
  { alert: "VsopInstallStuck", field: "for", from: "5m", to: "0s" },
  // Too low a threshold: fires for a shard where 1 reconcile in 10 fails.
  { alert: "VsopReconcileErrorRatio", field: "expr", from: "> 0.2", to: "> 0.05" },
  // Errors over errors: never below 100%, fires everywhere.
  {
    alert: "VsopReconcileErrorRatio",
    field: "expr",
    from: 'rate(controller_runtime_reconcile_total{controller="virtualserver"}',
    to: 'rate(controller_runtime_reconcile_errors_total{controller="virtualserver"}',
  },
  // Status only: a vCenter failure seen only in reconcile errors goes unnoticed.
  {
    alert: "VsopVCenterUnreachable",
    field: "expr",
    from: 'or\nsum by (namespace) (increase(vsop_reconcile_errors_total{reason=~"VCenterUnreachable|VCenterTLSError|VCenterAuthFailed"}[15m])) > 0',
    to: "",
  },
  // Any failure reason: a full datastore is not an unreachable vCenter.
  {
    alert: "VsopVCenterUnreachable",
    field: "expr",
    from: 'vsop_reconcile_errors_total{reason=~"VCenterUnreachable|VCenterTLSError|VCenterAuthFailed"}',
    to: "vsop_reconcile_errors_total",
  },
  // One server's mcollectived down is not the broker down.
  {
    alert: "VsopBrokerUnreachable",
    field: "expr",
    from: 'vsop_virtualservers_not_ready{reason=~"BrokerUnreachable|BrokerTLSError"}',
    to: 'vsop_virtualservers_not_ready{reason=~"BrokerUnreachable|BrokerTLSError|NodeNotReachable"}',
  },
  // Summed over every deployment: one leader anywhere hides a leaderless one.
  {
    alert: "VsopNoLeader",
    field: "expr",
    from: "sum by (namespace) (vsop_leader)",
    to: "sum(vsop_leader)",
  },
  // Targets that answer 0 are still present: never fires.
  {
    alert: "VsopDown",
    field: "expr",
    from: 'absent(up{job="vsop-metrics"} == 1)',
    to: 'absent(up{job="vsop-metrics"})',
  },
];

for (const m of MUTATIONS) {
  test(`promtool catches ${m.alert} with ${m.field} ${JSON.stringify(m.from)} → ${JSON.stringify(m.to)}`, () => {
    const file = rules();
    const rule = alerts(file).find((r) => r.alert === m.alert);
    assert.ok(rule, `no alert ${m.alert}`);
    const before = rule[m.field] ?? "";
    assert.ok(before.includes(m.from), `${m.alert}.${m.field} no longer contains ${m.from}`);
    rule[m.field] = before.replace(m.from, m.to);
    const r = promtoolTest(file);
    assert.equal(r.ok, false, `the promtool tests pass with the broken ${m.alert}`);
    assert.match(r.out, new RegExp(`alertname: ${m.alert}\\b`));
  });
}

test("the PrometheusRule carries exactly the groups of rules.yaml", () => {
  const rendered = kustomize(DIR).find((o) => o.kind === "PrometheusRule");
  assert.ok(rendered, "no PrometheusRule in deploy/monitoring");
  assert.deepEqual(
    rendered.spec?.groups,
    rules().groups,
    "deploy/monitoring/prometheusrule.yaml spec.groups differs from rules.yaml: copy rules.yaml's groups into it",
  );
});

test("deploy/ applies without monitoring CRDs; an overlay adds the component", () => {
  const plain = kustomize(path.join(ROOT, "deploy"));
  assert.deepEqual(
    plain.filter((o) => o.apiVersion.startsWith("monitoring.coreos.com/")).map((o) => o.kind),
    [],
  );
  const overlay = mkdtempSync(path.join(tmpdir(), "vsop-overlay-"));
  try {
    writeFileSync(
      path.join(overlay, "kustomization.yaml"),
      yaml.dump({
        resources: [path.relative(overlay, path.join(ROOT, "deploy"))],
        components: [path.relative(overlay, DIR)],
      }),
    );
    const all = kustomize(overlay, ["--load-restrictor", "LoadRestrictionsNone"]);
    const kinds = all.map((o) => `${o.kind}/${o.metadata.name}`);
    for (const k of [
      "ServiceMonitor/vsop",
      "PrometheusRule/vsop",
      "ConfigMap/vsop-grafana-dashboard",
    ])
      assert.ok(kinds.includes(k), `${k} missing from ${kinds.join(", ")}`);

    // The ServiceMonitor selects the metrics Service by its labels and port name.
    const monitor = all.find((o) => o.kind === "ServiceMonitor")!;
    const spec = monitor.spec as {
      selector: { matchLabels: Record<string, string> };
      endpoints: { port: string }[];
    };
    const services = all.filter(
      (o) =>
        o.kind === "Service" &&
        o.metadata.namespace === monitor.metadata.namespace &&
        Object.entries(spec.selector.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v),
    );
    assert.deepEqual(
      services.map((s) => s.metadata.name),
      ["vsop-metrics"],
      "the job name VsopDown expects",
    );
    const ports = (services[0]!.spec as { ports: { name: string }[] }).ports.map((p) => p.name);
    assert.ok(ports.includes(spec.endpoints[0]!.port));

    const dashboard = all.find((o) => o.metadata.name === "vsop-grafana-dashboard")!;
    assert.equal(dashboard.metadata.labels?.grafana_dashboard, "1");
    assert.equal(
      dashboard.data?.["vsop.json"],
      readFileSync(path.join(DIR, "grafana-dashboard.json"), "utf8"),
    );
  } finally {
    rmSync(overlay, { recursive: true, force: true });
  }
});

/** Every PromQL expression of the dashboard, Grafana's variables filled in. */
function dashboardExprs(): string[] {
  const d = JSON.parse(readFileSync(path.join(DIR, "grafana-dashboard.json"), "utf8")) as {
    panels: { targets?: { expr: string }[] }[];
  };
  return d.panels
    .flatMap((p) => p.targets ?? [])
    .map((t) =>
      t.expr
        .replaceAll("$__rate_interval", "5m")
        .replaceAll("$__range", "1d")
        .replaceAll("$namespace", ".*"),
    );
}

test("the dashboard's queries are valid PromQL", () => {
  const exprs = dashboardExprs();
  assert.ok(exprs.length >= 15, `${exprs.length} queries`);
  const dir = mkdtempSync(path.join(tmpdir(), "vsop-dash-"));
  try {
    const file = path.join(dir, "dashboard-rules.yaml");
    const recorded = exprs.map((expr, i) => ({ record: `vsop:dashboard:q${i}`, expr }));
    writeFileSync(file, yaml.dump({ groups: [{ name: "dashboard", rules: recorded }] }));
    const r = run("promtool", ["check", "rules", file]);
    assert.ok(r.ok, r.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the rules and the dashboard query only metrics vsop exports", async () => {
  const exported = new Set((await new Metrics().registry.getMetricsAsJSON()).map((m) => m.name));
  exported.add("up"); // Prometheus's own
  const text = [...alerts(rules()).map((r) => r.expr), ...dashboardExprs()].join("\n");
  const used = new Set(
    [
      ...text.matchAll(
        /\b(?:(?:vsop|controller_runtime|workqueue|process|nodejs)(?:_[a-z]+)+|up)\b/g,
      ),
    ].map((m) => m[0].replace(/_(bucket|count|sum)$/, "")),
  );
  const unknown = [...used].filter((n) => !exported.has(n));
  assert.deepEqual(unknown, [], "queried but not exported");
});

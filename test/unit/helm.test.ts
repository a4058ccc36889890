// The Helm chart deploy/helm/vsop: it lints, its default render is what `kubectl kustomize
// deploy/` renders (modulo the labels Helm adds), its values land where they should, and its
// crds/ are exact copies of crds/ (the one source; `make release` refreshes them).
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";
import {
  CHART,
  HELM,
  helmBuilt,
  HELM_LABELS,
  HELM_VERSION,
  ROOT,
  find,
  helm,
  helmTemplate,
  key,
  kustomize,
  normalise,
  parseAll,
  type K8sObject,
} from "../support/helm.js";

const CRD_HEADER =
  "# Copied from crds/ by make release (hack/release.sh): edit that file, not this one.\n";

interface Container {
  image: string;
  imagePullPolicy: string;
  args: string[];
  ports: { name: string; containerPort: number }[];
  resources: unknown;
}
const podSpec = (d: K8sObject) =>
  (d.spec as { template: { spec: { containers: Container[]; nodeSelector?: unknown } } }).template
    .spec;
const manager = (text: string): Container =>
  podSpec(find(text, "Deployment", "vsop")).containers[0]!;

before(() => helmBuilt());

test("helm is the pinned version hack/install.sh builds", () => {
  assert.ok(HELM_VERSION, 'no HELM_VERSION="v..." line in hack/install.sh');
  assert.ok(existsSync(HELM), `${HELM} is missing: run make install (hack/install.sh builds it)`);
  assert.match(
    helm(["version", "--short"]),
    new RegExp(`^${HELM_VERSION!.replace(/\./g, "\\.")}\\b`),
  );
});

test("the chart's crds/ are copies of crds/ (run make release after editing crds/)", () => {
  const sources = readdirSync(path.join(ROOT, "crds")).filter((f) =>
    f.endsWith(".provisioning.vsop.dev.yaml"),
  );
  assert.equal(sources.length, 2);
  assert.deepEqual(readdirSync(path.join(CHART, "crds")).sort(), sources.sort());
  for (const f of sources) {
    const source = readFileSync(path.join(ROOT, "crds", f), "utf8");
    const copy = readFileSync(path.join(CHART, "crds", f), "utf8");
    assert.ok(
      copy === CRD_HEADER + source,
      `deploy/helm/vsop/crds/${f} differs from crds/${f}: run make release (or hack/release.sh --crds)`,
    );
  }
});

test("the chart's appVersion is the operator's version (package.json), the default image tag", () => {
  const chart = yaml.load(readFileSync(path.join(CHART, "Chart.yaml"), "utf8")) as {
    appVersion: string;
  };
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
    version: string;
  };
  assert.equal(chart.appVersion, pkg.version);
  assert.equal(manager(helmTemplate()).image, `vsop:${pkg.version}`);
});

test("helm lint --strict passes, with default values and with monitoring on", () => {
  for (const args of [[], ["--set", "monitoring.enabled=true"]]) {
    const out = helm(["lint", "--strict", CHART, ...args]);
    assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

test("helm template with default values equals the kustomize render of deploy/ modulo Helm's labels", () => {
  const rendered = helmTemplate();
  const expected = normalise(kustomize());
  const actual = normalise(rendered);
  assert.deepEqual(actual.map(key), expected.map(key), "the same objects");
  for (let i = 0; i < expected.length; i++)
    assert.deepEqual(actual[i], expected[i], key(expected[i]!));
  // ...and Helm's labels are on every object the templates make (CRDs come from crds/ as is).
  for (const o of parseAll(rendered).filter((x) => x.kind !== "CustomResourceDefinition"))
    for (const l of HELM_LABELS) assert.ok(o.metadata.labels?.[l], `${key(o)} has no ${l} label`);
  assert.equal(
    expected.filter((o) => o.kind === "CustomResourceDefinition").length,
    2,
    "the kustomize render holds both CRDs",
  );
});

test("the helm release namespace does not move vsop out of vsop-system, unless namespace.name is empty", () => {
  const elsewhere = helmTemplate({}, ["--namespace", "tools"]);
  assert.deepEqual(normalise(elsewhere), normalise(helmTemplate()));
  const release = helmTemplate({ "namespace.name": "", "namespace.create": "false" }, [
    "--namespace",
    "tools",
  ]);
  const objects = parseAll(release);
  assert.ok(!objects.some((o) => o.kind === "Namespace"));
  for (const o of objects.filter((x) => x.metadata.namespace !== undefined))
    assert.equal(o.metadata.namespace, "tools", key(o));
  assert.ok(
    manager(release).args.includes("--provisioning-url=http://vsop-provisioning.tools.svc:8082"),
  );
  const binding = find(release, "ClusterRoleBinding", "vsop") as unknown as {
    subjects: { namespace: string }[];
  };
  assert.equal(binding.subjects[0]!.namespace, "tools");
});

test("image, replicas, resources and scheduling values show up in the Deployment", () => {
  const text = helmTemplate({
    "image.repository": "registry.example.com/vsop",
    "image.tag": "1.2.3",
    "image.pullPolicy": "Always",
    replicas: "3",
    "resources.limits.memory": "1Gi",
    "nodeSelector.role": "infra",
  });
  const d = find(text, "Deployment", "vsop");
  const c = manager(text);
  assert.equal(c.image, "registry.example.com/vsop:1.2.3");
  assert.equal(c.imagePullPolicy, "Always");
  assert.equal((d.spec as { replicas: number }).replicas, 3);
  assert.deepEqual(c.resources, {
    requests: { cpu: "50m", memory: "128Mi" },
    limits: { cpu: "500m", memory: "1Gi" },
  });
  assert.deepEqual(podSpec(d).nodeSelector, { role: "infra" });
  // Nothing else moved.
  const others = (t: string) => normalise(t).filter((o) => o.kind !== "Deployment");
  assert.deepEqual(others(text), others(helmTemplate()));
});

test("the provisioning URL and port reach the flags, the container port and the Service", () => {
  const url = helmTemplate({ "provisioning.url": "http://10.0.99.10:30082" });
  assert.ok(manager(url).args.includes("--provisioning-url=http://10.0.99.10:30082"));
  assert.ok(manager(url).args.includes("--provisioning-bind-address=:8082"));

  const port = helmTemplate({ "provisioning.port": "9000" });
  const c = manager(port);
  assert.ok(c.args.includes("--provisioning-bind-address=:9000"));
  assert.ok(c.args.includes("--provisioning-url=http://vsop-provisioning.vsop-system.svc:9000"));
  assert.equal(c.ports.find((p) => p.name === "provisioning")?.containerPort, 9000);
  const svc = find(port, "Service", "vsop-provisioning") as unknown as {
    spec: { ports: { port: number; targetPort: string }[] };
  };
  assert.deepEqual(
    svc.spec.ports.map((p) => [p.port, p.targetPort]),
    [[9000, "provisioning"]],
  );
});

test("the NetworkPolicy takes the Boot-VLAN ranges from values, and can be left out", () => {
  const text = helmTemplate({}, [
    "--set-json",
    'networkPolicy.provisioningCIDRs=["10.0.98.0/24","10.0.99.0/24"]',
  ]);
  const np = find(text, "NetworkPolicy", "vsop") as unknown as {
    spec: { ingress: { from: { ipBlock?: { cidr: string } }[] }[] };
  };
  assert.deepEqual(
    np.spec.ingress[0]!.from.map((f) => f.ipBlock?.cidr),
    ["10.0.98.0/24", "10.0.99.0/24"],
  );
  const off = parseAll(helmTemplate({ "networkPolicy.enabled": "false" }));
  assert.ok(!off.some((o) => o.kind === "NetworkPolicy"));
});

test("monitoring on adds a ServiceMonitor for the vsop-metrics Service, and nothing else changes", () => {
  const off = parseAll(helmTemplate());
  assert.ok(!off.some((o) => o.kind === "ServiceMonitor"), "no ServiceMonitor by default");
  const text = helmTemplate({ "monitoring.enabled": "true", "monitoring.labels.release": "prom" });
  const sm = find(text, "ServiceMonitor", "vsop") as K8sObject & {
    spec: {
      selector: { matchLabels: Record<string, string> };
      endpoints: { port: string; path: string }[];
    };
  };
  assert.equal(sm.apiVersion, "monitoring.coreos.com/v1");
  assert.equal(sm.metadata.namespace, "vsop-system");
  assert.equal(sm.metadata.labels?.release, "prom");
  assert.deepEqual(
    sm.spec.endpoints.map((e) => [e.port, e.path]),
    [["metrics", "/metrics"]],
  );
  const svc = find(text, "Service", "vsop-metrics");
  for (const [k, v] of Object.entries(sm.spec.selector.matchLabels))
    assert.equal(svc.metadata.labels?.[k], v, `the metrics Service has ${k}=${v}`);
  const ports = (svc.spec as { ports: { name: string }[] }).ports.map((p) => p.name);
  assert.ok(ports.includes("metrics"));
  assert.deepEqual(
    normalise(text).filter((o) => o.kind !== "ServiceMonitor"),
    normalise(helmTemplate()),
  );
});

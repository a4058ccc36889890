// What `make release` ships, checked against the local stack's API server: install.yaml is the
// kustomize render of deploy/ in one file and the API server accepts all of it (server-side dry
// run), the packaged chart renders like the chart folder and is accepted too, and the installed
// CRDs carry a description on every field (`kubectl explain` shows them).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { installVsop, kubectl } from "../support/harness.js";
import { stackEnv } from "../support/env.js";
import {
  HELM,
  ROOT,
  helm,
  helmBuilt,
  helmTemplate,
  kustomize,
  normalise,
  parseAll,
} from "../support/helm.js";

let out: string;

before(async () => {
  stackEnv("KUBECONFIG");
  installVsop();
  await helmBuilt();
  out = mkdtempSync(path.join(tmpdir(), "vsop-release-"));
  execFileSync(path.join(ROOT, "hack/release.sh"), {
    env: { ...process.env, VSOP_RELEASE_DIR: out, HELM },
    stdio: ["ignore", "ignore", "pipe"],
  });
});

after(() => {
  if (out) rmSync(out, { recursive: true, force: true });
});

/** Server-side dry run of a manifest; the names kubectl reports, one per object. */
function dryRun(manifest: string): string[] {
  return kubectl(["apply", "--dry-run=server", "-f", "-"], manifest)
    .trim()
    .split("\n")
    .filter((l) => l.includes("(server dry run)"));
}

test("make release writes install.yaml (the kustomize render) and the packaged chart", () => {
  const installYaml = readFileSync(path.join(out, "install.yaml"), "utf8");
  assert.deepEqual(normalise(installYaml), normalise(kustomize()));
  const kinds = new Set(parseAll(installYaml).map((o) => o.kind));
  for (const k of [
    "CustomResourceDefinition",
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "NetworkPolicy",
  ])
    assert.ok(kinds.has(k), `install.yaml has a ${k}`);
  const packages = readdirSync(out).filter((f) => /^vsop-.*\.tgz$/.test(f));
  assert.equal(packages.length, 1, `one chart package in ${out}: ${packages.join(", ")}`);
  const fromPackage = helm(["template", "vsop", path.join(out, packages[0]!), "--include-crds"]);
  assert.deepEqual(parseAll(fromPackage), parseAll(helmTemplate()));
});

test("the API server accepts every object of install.yaml (kubectl apply --dry-run=server)", () => {
  const installYaml = readFileSync(path.join(out, "install.yaml"), "utf8");
  const accepted = dryRun(installYaml);
  assert.equal(accepted.length, parseAll(installYaml).length, accepted.join("\n"));
});

test("the API server accepts the chart's render, with changed values too", () => {
  const sets: Record<string, string>[] = [
    {},
    { "image.tag": "9.9.9", replicas: "1", "provisioning.port": "9000" },
  ];
  for (const set of sets) {
    const text = helmTemplate(set);
    const accepted = dryRun(text);
    assert.equal(
      accepted.length,
      parseAll(text).length,
      `${JSON.stringify(set)}: ${accepted.join("\n")}`,
    );
  }
});

test("the installed CRDs describe every field: kubectl explain shows them", () => {
  interface Schema {
    description?: string;
    properties?: Record<string, Schema>;
    items?: Schema;
  }
  const missing: string[] = [];
  // metadata is the exception: the API server documents it (ObjectMeta) and refuses more.
  const walk = (s: Schema, at: string) => {
    for (const [name, child] of Object.entries(s.properties ?? {})) {
      const top = at.endsWith(":");
      if (!child.description && !(top && name === "metadata")) missing.push(`${at}.${name}`);
      walk(child, `${at}.${name}`);
    }
    if (s.items) walk(s.items, `${at}[]`);
  };
  for (const crd of [
    "virtualservers.provisioning.vsop.dev",
    "virtualserverclasses.provisioning.vsop.dev",
  ]) {
    const got = JSON.parse(kubectl(["get", "crd", crd, "-o", "json"])) as {
      spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
    };
    for (const v of got.spec.versions) walk(v.schema.openAPIV3Schema, `${crd}:`);
  }
  assert.deepEqual(missing, []);
  const explain = kubectl(["explain", "virtualservers.status.vm.nics.macAddress"]);
  assert.match(explain, /MAC address vSphere assigned/);
  const cls = kubectl(["explain", "virtualserverclasses.spec.hardware.cpus"]);
  assert.match(cls, /Default 2/);
});

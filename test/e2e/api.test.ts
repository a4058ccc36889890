// The API server itself refuses bad VirtualServers, naming the field (CRD schema + CEL rules).
import { before, test } from "node:test";
import assert from "node:assert/strict";
import * as yaml from "js-yaml";
import { createNamespace, installVsop, kubectl, kubectlTry } from "../support/harness.js";
import { virtualServer } from "../support/fixtures.js";

let ns: string;
before(() => {
  installVsop();
  ns = createNamespace("api");
});

function create(
  name: string,
  hostname: string,
  spec: Record<string, unknown> = {},
  className = "standard",
) {
  const vs = virtualServer(ns, name, hostname, className, {}, spec) as {
    spec: Record<string, unknown>;
  };
  if (className === "") delete vs.spec.className;
  return kubectlTry(["create", "-f", "-"], yaml.dump(vs));
}

const cases: [string, string, Record<string, unknown>, RegExp][] = [
  ["uppercase", "Web-prod-1.example.test", {}, /spec\.hostname.*lowercase fully qualified/],
  ["underscore", "web_prod-1.example.test", {}, /spec\.hostname.*lowercase fully qualified/],
  [
    "too-long",
    `${"a".repeat(60)}.${"b".repeat(60)}.${"c".repeat(60)}.${"d".repeat(60)}.${"e".repeat(60)}.test`,
    {},
    /spec\.hostname.*(253|longer)/,
  ],
  ["long-label", `${"a".repeat(64)}.example.test`, {}, /spec\.hostname.*at most 63 characters/],
  ["cpus-0", "web-prod-1.example.test", { cpus: 0 }, /spec\.cpus.*greater than or equal to 1/],
  [
    "memory-1",
    "web-prod-1.example.test",
    { memoryMiB: 1 },
    /spec\.memoryMiB.*greater than or equal to 256/,
  ],
  [
    "policy",
    "web-prod-1.example.test",
    { deletionPolicy: "Shred" },
    /spec\.deletionPolicy.*Unsupported value: "Shred"/,
  ],
];

for (const [name, hostname, spec, expected] of cases) {
  test(`rejected: ${name}`, () => {
    const r = create(`bad-${name}`, hostname, spec);
    assert.equal(r.ok, false, r.out);
    assert.match(r.out, expected);
  });
}

test("rejected: missing className", () => {
  const r = create("bad-no-class", "web-prod-1.example.test", {}, "");
  assert.equal(r.ok, false);
  assert.match(r.out, /spec\.className: Required value/);
});

test("rejected: a changed hostname on update", () => {
  assert.ok(create("immutable", "web-prod-1.example.test").ok);
  const r = kubectlTry([
    "-n",
    ns,
    "patch",
    "vsrv",
    "immutable",
    "--type=merge",
    "-p",
    JSON.stringify({ spec: { hostname: "web-prod-2.example.test" } }),
  ]);
  assert.equal(r.ok, false);
  assert.match(r.out, /spec\.hostname.*immutable/);
  kubectl(["-n", ns, "delete", "vsrv", "immutable", "--wait=false"]);
});

test("rejected: a changed className on update (the VM would be lost in another vCenter)", () => {
  assert.ok(create("class-fixed", "web-prod-1.example.test").ok);
  const patch = (className: string) =>
    kubectlTry([
      "-n",
      ns,
      "patch",
      "vsrv",
      "class-fixed",
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { className } }),
    ]);
  const r = patch("another-class");
  assert.equal(r.ok, false);
  assert.match(r.out, /spec\.className.*immutable/);
  kubectl(["-n", ns, "delete", "vsrv", "class-fixed", "--wait=false"]);
});

test("accepted: a good object gets the default deletionPolicy", () => {
  assert.ok(create("good", "web-prod-1.example.test").ok);
  const vs = JSON.parse(kubectl(["-n", ns, "get", "vsrv", "good", "-o", "json"])) as {
    spec: { deletionPolicy: string };
  };
  assert.equal(vs.spec.deletionPolicy, "Delete");
  kubectl(["-n", ns, "delete", "vsrv", "good", "--wait=false"]);
});

test("kubectl explain vsrv.spec describes the fields", () => {
  const out = kubectl(["explain", "vsrv.spec"]);
  for (const field of [
    "hostname",
    "className",
    "cpus",
    "memoryMiB",
    "diskGiB",
    "deletionPolicy",
    "puppet",
  ])
    assert.match(out, new RegExp(`\\b${field}\\b`));
});

// Smoke tests: one per part of the local stack, each talking to the real thing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { promises as dns } from "node:dns";
import * as k8s from "@kubernetes/client-node";
import amqp from "amqplib";
import { VSphereSession } from "../../src/vsphere/session.js";
import { VSphereTLSError } from "../../src/vsphere/errors.js";
import { listObjects } from "../../src/vsphere/properties.js";
import { text } from "../../src/vsphere/xml.js";
import { stackEnv } from "../support/env.js";
import { stompSubscribe } from "../support/stomp.js";

test("kube-apiserver: create and read a ConfigMap through the admin kubeconfig", async () => {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(stackEnv("KUBECONFIG"));
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const name = `smoke-${Date.now()}`;
  await core.createNamespacedConfigMap({
    namespace: "default",
    body: { metadata: { name }, data: { hello: "world" } },
  });
  const cm = await core.readNamespacedConfigMap({ name, namespace: "default" });
  assert.equal(cm.data?.hello, "world");
  await core.deleteNamespacedConfigMap({ name, namespace: "default" });
});

test("kube-apiserver: RBAC is on (an unbound identity is refused)", async () => {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(stackEnv("KUBECONFIG"));
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const review = await kc.makeApiClient(k8s.AuthorizationV1Api).createSubjectAccessReview({
    body: {
      spec: {
        user: "nobody-in-particular",
        resourceAttributes: { verb: "list", resource: "pods", namespace: "default" },
      },
    },
  });
  assert.equal(review.status?.allowed, false);
  assert.ok(core);
});

function vcsimSession(caBundle: string) {
  return new VSphereSession(
    { url: stackEnv("GOVC_URL"), caBundle },
    { username: stackEnv("GOVC_USERNAME"), password: stackEnv("GOVC_PASSWORD") },
  );
}

test("vcsim: vim25 login with CA verification on, and the stack's port groups are there", async () => {
  const session = vcsimSession(readFileSync(stackEnv("GOVC_TLS_CA_CERTS"), "utf8"));
  const root = (await session.serviceContent()).rootFolder;
  const groups = await listObjects(session, root, "DistributedVirtualPortgroup", ["name"]);
  const names = groups.map((g) => text(g.props.name));
  for (const want of ["Boot-VLAN", "VLAN-10", "VLAN-30"]) assert.ok(names.includes(want), want);
  assert.equal(session.loginCount, 1);
  await session.logout();
});

test("vcsim: a CA bundle that did not sign its certificate is refused before any request", async () => {
  const otherCA = readFileSync(stackEnv("VSOP_KUBE_CA"), "utf8");
  const session = vcsimSession(otherCA);
  await assert.rejects(session.serviceContent(), VSphereTLSError);
  assert.equal(session.loginCount, 0);
});

test("RabbitMQ: an AMQP publish to mcollective_broadcast reaches a STOMP subscriber", async () => {
  const sub = await stompSubscribe(
    Number(stackEnv("VSOP_STOMP_PORT")),
    "/exchange/mcollective_broadcast/smoke",
  );
  const conn = await amqp.connect(stackEnv("VSOP_AMQP_URL"));
  try {
    const ch = await conn.createChannel();
    const body = `hello-${Date.now()}`;
    ch.publish("mcollective_broadcast", "smoke", Buffer.from(body));
    const frame = await sub.next(5000);
    assert.match(frame, /^MESSAGE\n/);
    assert.ok(frame.endsWith(body), frame);
  } finally {
    await conn.close();
    sub.close();
  }
});

test("dnsmasq: web-prod-1.example.test resolves through VSOP_DNS_SERVER", async () => {
  const resolver = new dns.Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([stackEnv("VSOP_DNS_SERVER")]);
  assert.deepEqual(await resolver.resolve4("web-prod-1.example.test"), ["10.12.30.20"]);
  assert.deepEqual(await resolver.resolve4("dns-30.example.test"), ["10.12.30.4"]);
  await assert.rejects(resolver.resolve4("absent-prod-9.example.test"), { code: "ENOTFOUND" });
});

test("mcollectived and puppet are installed", () => {
  const mco = execFileSync("ruby", ["-e", 'require "mcollective"; puts MCollective::VERSION'], {
    encoding: "utf8",
  }).trim();
  assert.equal(mco, "2.12.5");
  assert.ok(execFileSync("sh", ["-c", "command -v mcollectived"], { encoding: "utf8" }).trim());
  const puppet = execFileSync("puppet", ["--version"], { encoding: "utf8" }).trim();
  assert.match(puppet, /^7\./);
});

test("Node.js 24 LTS runs the tests and the operator (the `node` they spawn)", () => {
  const major = (v: string) => Number(v.split(".")[0]);
  assert.ok(major(process.versions.node) >= 24, `test runner on ${process.versions.node}`);
  const spawned = execFileSync("node", ["-p", "process.versions.node"], {
    encoding: "utf8",
  }).trim();
  assert.ok(major(spawned) >= 24, `operator's node is ${spawned}`);
  const engines = (
    JSON.parse(readFileSync("package.json", "utf8")) as { engines: { node: string } }
  ).engines.node;
  assert.equal(engines, ">=24");
});

// The bad-input matrix: what vsop is handed that it must refuse, one row each, against the real
// stack with one operator and one namespace. Four groups:
// - schema: the API server refuses the object on `kubectl apply --dry-run=server`; proof: the
//   object does not exist afterwards (or, for an immutable field, still has its old value);
// - semantic: accepted objects vsop refuses with a condition reason; proof: no mutating vSphere
//   call (vsop's SOAP request metric), no VM of the row's name (govc), and no Kubernetes write by
//   the operator beyond the objects' status, their finalizer/labels and Events (audit log);
// - provisioning HTTP: wrong methods, sizes, paths and tokens; proof: the install record Secret
//   (its resourceVersion) and the server's status are unchanged, the token is not spent;
// - MCollective replies injected on the operator's reply queue; proof: the drop counted by
//   reason and logged without the bytes, and the server's Installed condition unchanged.
// The TemplateError row creates a VM (templates are rendered for it); its proof is that nothing
// happened to the VM after CreateVM_Task. Cases of api.test.ts, naming.test.ts,
// vsphere-faults.test.ts, install.test.ts, security.test.ts and broker-input.test.ts are not
// repeated: rows here are other variants of those rules (ClassNotFound and NameNotResolvable come
// close, and are here for the proofs those files do not make).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from "amqplib";
import * as yaml from "js-yaml";
import {
  addDNSRecords,
  apply,
  auditEvents,
  cond,
  createNamespace,
  deleteServers,
  getJSON,
  getVS,
  installVsop,
  kubectl,
  kubectlTry,
  metric,
  OPERATOR_NS,
  removeDNSNames,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  WRITE_VERBS,
  madeBy,
  type AuditEvent,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { extraConfig, findVMs, govc, destroyVMs } from "../support/govc.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  fetchBootstrap,
  readInstallRecord,
  IDENTITY_KEY_PATH,
  installToken,
  readGuestinfo,
} from "../support/installer.js";
import { SCHEMA_ROWS } from "../support/bad-input.js";
import {
  dumpRuby,
  encodeReplyBody,
  encodeReplyEnvelope,
  loadRuby,
  symbolHash,
  type RubyValue,
} from "../../src/mcollective/marshal.js";
import { signBody } from "../../src/mcollective/security.js";

const LABEL = "vsop-test=bad-input";
const LABELS = { "vsop-test": "bad-input" };
const host = (n: number) => `bdin-prod-${n}.example.test`;
const short = (fqdn: string) => fqdn.split(".")[0]!;
/** vSphere methods that change something: every task, and the guest operations. */
const MUTATING = /_Task$|^(ShutdownGuest|RebootGuest)$/;
const SOAP = "vsop_vsphere_soap_requests_total";
const DROPPED = "vsop_mcollective_replies_dropped_total";
/** Put in every hostile MCollective message: the operator's log must never contain it. */
const MARKER = `bad-input-${randomBytes(6).toString("hex")}`;

// The servers the HTTP and MCollective groups talk about: A and B install over the network
// (kickstart tokens), M with guestinfo (its installed check goes over MCollective).
const A = host(241);
const B = host(242);
const M = host(243);

const CLASSES: Record<string, Record<string, unknown>> = {
  "bad-input-net": { boot: { method: "network", installTimeout: "10m" } },
  "bad-input-gi": { boot: { method: "guestinfo", installTimeout: "10m" } },
  "bad-input-octet4": { network: { vlanOctet: 4 } },
  "bad-input-chrony": { network: { services: { ntp: "chrony-{vlan}" } } },
  "bad-input-nopg": { network: { portGroupTemplate: "VLAN-{vlan}-missing" } },
  "bad-input-zero-timeout": { boot: { method: "network", installTimeout: "0s" } },
  "bad-input-nogroup": {
    naming: { pattern: "^(?<apptype>[a-z]+)-(?<environment>[a-z]+)-[0-9]+\\.(?<domain>.+)$" },
  },
  "bad-input-badregex": { naming: { pattern: "^(?<apptype>[a-z]+" } },
  // Meant for VLAN 300, with a typo: before, it never matched and VLAN 30 was used instead.
  "bad-input-badcidr": { network: { vlanCIDRs: [{ cidr: "10.12.300.0/24", vlan: 300 }] } },
  "bad-input-nosecret": { vcenter: { credentialsSecret: "bad-input-no-such-secret" } },
  "bad-input-nokey": { vcenter: { credentialsSecret: "bad-input-username-only" } },
  "bad-input-notemplate": { hardware: { template: "bad-input-no-such-template" } },
  "bad-input-fqdn": { hardware: { vmName: "FQDN" } },
  "bad-input-badnet": {
    boot: { method: "guestinfo", templatesConfigMap: "bad-input-templates" },
  },
};

/** A network-config that gives the server a default route, which vsop must never render. */
const DEFAULT_ROUTE_NETWORK_CONFIG = `version: 2
ethernets:
  {{nic.name}}:
    dhcp4: false
    addresses: ["{{address}}/{{prefixLength}}"]
    gateway4: 10.12.30.1
`;

let ns: string;
let op: Operator;

/** DNS records of the semantic rows (10.12.30.0 gives VLAN 0 with vlanOctet 4). */
const SEMANTIC_DNS: [string, string][] = [
  ["10.12.30.0", host(3)],
  ["10.12.30.244", host(4)],
  ["10.12.30.249", host(9)],
  ["10.12.30.249", host(11)],
  ["10.12.30.250", host(12)],
  ["10.12.30.251", host(13)],
  ["10.12.30.252", host(14)],
  ["10.12.30.253", host(15)],
  ["10.12.30.254", host(16)],
  ["10.12.30.248", host(6)],
  ["10.12.30.247", host(7)],
  ["10.12.30.246", host(10)],
];

let mcoConn: ChannelModel | undefined;
let stopping = false;
let mcoChannel: Channel;
/** vsop's requests to M, as M's mcollectived would receive them. */
const requests: { msg: ConsumeMessage; at: number; id: string }[] = [];

/** The operator's metrics; a retry covers a kept-alive connection the server just closed. */
async function metricsBody(): Promise<string> {
  try {
    return (await scrape(op.metricsPort)).body;
  } catch {
    return (await scrape(op.metricsPort)).body;
  }
}

/** vsop's mutating SOAP requests so far, by method. */
async function mutatingCalls(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await metricsBody()).split("\n")) {
    const m = new RegExp(`^${SOAP}\\{.*method="([^"]+)".*\\}\\s+([0-9.eE+-]+)$`).exec(line);
    if (m && MUTATING.test(m[1]!)) out[m[1]!] = Number(m[2]);
  }
  return out;
}

function delta(before: Record<string, number>, after: Record<string, number>) {
  return Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)] as const)
      .filter(([, d]) => d !== 0),
  );
}

before(async () => {
  installVsop();
  ns = createNamespace("bad-input");
  kubectl(["delete", "virtualserverclass", "--ignore-not-found", ...Object.keys(CLASSES)]);
  for (const [name, overrides] of Object.entries(CLASSES)) applyClass(name, overrides);
  apply(
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "bad-input-username-only", namespace: OPERATOR_NS },
      stringData: { username: stackEnv("GOVC_USERNAME") },
    },
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "bad-input-templates", namespace: OPERATOR_NS },
      data: { "network-config": DEFAULT_ROUTE_NETWORK_CONFIG },
    },
  );
  kubectl([
    "-n",
    OPERATOR_NS,
    "delete",
    "secret",
    "bad-input-no-such-secret",
    "--ignore-not-found",
  ]);
  addDNSRecords([["10.12.30.241", A], ["10.12.30.242", B], ["10.12.30.243", M], ...SEMANTIC_DNS]);
  // Leftovers of an earlier run that stopped before its after().
  destroyVMs([...[A, B, M, host(16)].map(short), host(15)]);
  op = startOperator("bad-input", ["--label-selector", LABEL, "--resync-period", "3s"]);
  await waitFor(
    "the operator's metrics",
    async () => (await scrape(op.metricsPort)).status === 200,
  );
  // The HTTP and MCollective groups' servers start now; their VMs are built while the schema
  // rows run.
  apply(
    virtualServer(ns, "http-a", A, "bad-input-net", LABELS),
    virtualServer(ns, "http-b", B, "bad-input-net", LABELS),
    virtualServer(ns, "mco-m", M, "bad-input-gi", LABELS),
  );
  // The broker is shared with other stacks on the machine and may be restarting just now.
  await waitFor("the broker", () => startListening().then(() => true), 60_000);
});

after(async () => {
  stopping = true;
  await mcoConn?.close().catch(() => undefined);
  if (ns) await deleteServers(ns, 120_000);
  if (op) assert.equal(await op.stop(), 0, "the operator exits cleanly");
  destroyVMs([host(15)]);
  kubectl(["delete", "virtualserverclass", "--ignore-not-found", ...Object.keys(CLASSES)]);
  kubectl([
    ...["-n", OPERATOR_NS, "delete", "--ignore-not-found"],
    ...["secret/bad-input-username-only", "configmap/bad-input-templates"],
  ]);
  removeDNSNames([A, B, M, ...SEMANTIC_DNS.map(([, n]) => n)]);
});

// --- schema: the API server refuses --------------------------------------------------------------

/** kubectl without blocking the event loop, so rows can run a few at a time. */
function kubectlAsync(args: string[], input?: string): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const proc = spawn("kubectl", args, {
      env: { ...process.env, KUBECONFIG: stackEnv("KUBECONFIG") },
    });
    let out = "";
    proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (out += d.toString()));
    proc.on("close", (code) => resolve({ ok: code === 0, out }));
    proc.stdin.end(input);
  });
}

/** `fn` over `items`, at most `limit` at a time, results in order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>) {
  const results: R[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

test("schema: the API server refuses each object, and nothing is created", async (t) => {
  // Each row: the dry-run apply, then a get of the object; four rows at a time.
  const outcomes = await mapLimit(SCHEMA_ROWS, 4, async (row) => {
    const where = row.kind === "virtualserver" ? ["-n", ns] : [];
    const manifest = yaml.dump(row.object(ns), { lineWidth: -1 });
    const refusal = await kubectlAsync(["apply", "--dry-run=server", "-f", "-"], manifest);
    const got = await kubectlAsync([...where, "get", row.kind, row.objectName]);
    return { refusal, got };
  });
  for (const [i, row] of SCHEMA_ROWS.entries()) {
    await t.test(row.name, () => {
      const { refusal, got } = outcomes[i]!;
      assert.equal(refusal.ok, false, `accepted: ${refusal.out}`);
      assert.match(refusal.out, row.refused);
      // Refused for the row's flaw alone: the rest of the object is good.
      assert.equal(refusal.out.match(/spec\.[A-Za-z.[\]0-9]+: /g)?.length ?? 1, 1, refusal.out);
      assert.doesNotMatch(refusal.out, /metadata\.name|invalid resource name/);
      assert.equal(got.ok, false, "the object exists");
      assert.match(got.out, /NotFound|not found/);
    });
  }

  // An existing server (not the operator's: no test label) whose immutable fields are changed.
  const existing = virtualServer(ns, "schema-immutable", host(240), "bad-input-net");
  apply(existing);
  const original = getVS(ns, "schema-immutable")!;
  const immutable: [string, Record<string, unknown>, RegExp][] = [
    ["hostname changed", { hostname: host(239) }, /spec\.hostname.*hostname is immutable/],
    ["className changed", { className: "bad-input-gi" }, /spec\.className.*className is immutable/],
  ];
  for (const [name, change, refused] of immutable) {
    await t.test(name, () => {
      const changed = { ...existing, spec: { ...existing.spec, ...change } };
      const r = kubectlTry(["apply", "--dry-run=server", "-f", "-"], yaml.dump(changed));
      assert.equal(r.ok, false, `accepted: ${r.out}`);
      assert.match(r.out, refused);
      const now = getVS(ns, "schema-immutable")!;
      assert.deepEqual(now.spec, original.spec, "the object keeps its spec");
      assert.equal(now.metadata.generation, original.metadata.generation);
    });
  }
  kubectl(["-n", ns, "delete", "vsrv", "schema-immutable", "--wait=false"]);
});

// --- semantic: accepted, refused by vsop with a reason --------------------------------------------

interface SemanticRow {
  name: string;
  object: string;
  hostname: string;
  className: string;
  reason: string;
  /** The step condition that carries the reason besides Ready (none for class-level reasons). */
  condition?: string;
  message: RegExp;
}

const SEMANTIC_ROWS: SemanticRow[] = [
  {
    name: "instance part not a number → NameConventionViolation",
    object: "sem-convention",
    hostname: "bdin-prod-one.example.test",
    className: "bad-input-net",
    reason: "NameConventionViolation",
    condition: "NameResolved",
    message: /bdin-prod-one\.example\.test does not follow the naming convention/,
  },
  {
    name: "no A record → NameNotResolvable",
    object: "sem-unresolvable",
    hostname: host(2),
    className: "bad-input-net",
    reason: "NameNotResolvable",
    condition: "NameResolved",
    message: /bdin-prod-2\.example\.test/,
  },
  {
    name: "VLAN octet gives VLAN 0 → VLANNotDerivable",
    object: "sem-vlan0",
    hostname: host(3),
    className: "bad-input-octet4",
    reason: "VLANNotDerivable",
    condition: "NameResolved",
    message: /10\.12\.30\.0/,
  },
  {
    name: "a renamed service missing from DNS → ServiceNameMissing",
    object: "sem-chrony",
    hostname: host(4),
    className: "bad-input-chrony",
    reason: "ServiceNameMissing",
    condition: "NameResolved",
    message: /chrony-30\.example\.test/,
  },
  {
    name: "class does not exist → ClassNotFound",
    object: "sem-noclass",
    hostname: host(5),
    className: "bad-input-no-such-class",
    reason: "ClassNotFound",
    message: /bad-input-no-such-class does not exist/,
  },
  {
    name: "installTimeout 0s (the schema allows it) → InvalidClass",
    object: "sem-zero-timeout",
    hostname: host(6),
    className: "bad-input-zero-timeout",
    reason: "InvalidClass",
    message: /boot\.installTimeout "0s" is not a duration/,
  },
  {
    name: "naming.pattern without the instance group → InvalidClass",
    object: "sem-nogroup",
    hostname: host(7),
    className: "bad-input-nogroup",
    reason: "InvalidClass",
    condition: "NameResolved",
    message: /instance/,
  },
  {
    name: "naming.pattern not a regular expression → InvalidClass",
    object: "sem-badregex",
    hostname: host(8),
    className: "bad-input-badregex",
    reason: "InvalidClass",
    condition: "NameResolved",
    message: /naming\.pattern/,
  },
  {
    name: "vlanCIDRs entry that is no IPv4 network (the schema allows it) → InvalidClass",
    object: "sem-badcidr",
    hostname: host(10),
    className: "bad-input-badcidr",
    reason: "InvalidClass",
    message: /network\.vlanCIDRs\[0\]\.cidr "10\.12\.300\.0\/24" is not an IPv4 network/,
  },
  {
    name: "port group template names no port group → VLANPortGroupMissing",
    object: "sem-holder",
    hostname: host(9),
    className: "bad-input-nopg",
    reason: "VLANPortGroupMissing",
    condition: "VMCreated",
    message: /"VLAN-30-missing"/,
  },
  {
    name: "vCenter credentials Secret missing → SecretNotFound",
    object: "sem-nosecret",
    hostname: host(12),
    className: "bad-input-nosecret",
    reason: "SecretNotFound",
    message: /bad-input-no-such-secret does not exist/,
  },
  {
    name: "vCenter credentials Secret without password → SecretKeyMissing",
    object: "sem-nokey",
    hostname: host(13),
    className: "bad-input-nokey",
    reason: "SecretKeyMissing",
    message: /bad-input-username-only lacks password/,
  },
  {
    name: "template VM does not exist → TemplateNotFound",
    object: "sem-notemplate",
    hostname: host(14),
    className: "bad-input-notemplate",
    reason: "TemplateNotFound",
    condition: "VMCreated",
    message: /bad-input-no-such-template/,
  },
  {
    name: "a foreign VM has the FQDN as its name → VMNameConflict",
    object: "sem-squatted",
    hostname: host(15),
    className: "bad-input-fqdn",
    reason: "VMNameConflict",
    condition: "VMCreated",
    message: /bdin-prod-15\.example\.test/,
  },
];

/** Rows that need the holder (sem-holder) to have resolved first: who holds is then certain. */
const CONFLICT_ROWS: SemanticRow[] = [
  {
    name: "the holder's hostname again → HostnameConflict",
    object: "sem-same-name",
    hostname: host(9),
    className: "bad-input-nopg",
    reason: "HostnameConflict",
    condition: "NameResolved",
    message: new RegExp(`claimed by VirtualServer [a-z0-9-]+/sem-holder`),
  },
  {
    name: "another name for the holder's address → AddressConflict",
    object: "sem-same-address",
    hostname: host(11),
    className: "bad-input-nopg",
    reason: "AddressConflict",
    condition: "NameResolved",
    message: /10\.12\.30\.249, which VirtualServer [a-z0-9-]+\/sem-holder/,
  },
];

/** The row's object has its reason on Ready (and its step condition), a sentence and a phase. */
function assertReason(row: SemanticRow, vs: VS | undefined): void {
  const ready = cond(vs, "Ready");
  assert.equal(ready?.reason, row.reason, `Ready: ${ready?.reason}: ${ready?.message}`);
  assert.equal(ready.status, "False");
  assert.match(ready.message, row.message);
  assert.match(ready.message, /^\S.{20,}\.$/s, "the message is a sentence");
  if (row.condition) assert.equal(cond(vs, row.condition)?.reason, row.reason, row.condition);
  assert.ok(["Waiting", "Failed"].includes(vs!.status?.phase ?? ""), `phase ${vs!.status?.phase}`);
}

interface Observed {
  servers: Map<string, VS>;
  warnings: Set<string>;
  vms: Set<string>;
  audit: AuditEvent[];
}

/**
 * Waits until every row shows its reason and its Warning Event (or the time is up, and the rows
 * report what they show), then reads each source once: servers, Events, VM names, audit log.
 */
async function observe(rows: SemanticRow[], since: Date): Promise<Observed> {
  const servers = () =>
    new Map(
      getJSON<{ items: VS[] }>(["-n", ns, "get", "vsrv", "-l", LABEL]).items.map((v) => [
        v.metadata.name,
        v,
      ]),
    );
  const warnings = () =>
    new Set(
      getJSON<{ items: { type: string; reason: string; involvedObject: { name: string } }[] }>([
        ...["-n", ns, "get", "events"],
      ])
        .items.filter((e) => e.type === "Warning")
        .map((e) => `${e.involvedObject.name}/${e.reason}`),
    );
  const done = () => {
    const [s, w] = [servers(), warnings()];
    return rows.every(
      (r) =>
        cond(s.get(r.object), "Ready")?.reason === r.reason && w.has(`${r.object}/${r.reason}`),
    );
  };
  await waitFor("every row's reason and Event", done, 90_000).catch(() => undefined);
  const vms = new Set(
    govc(["find", "/", "-type", "m"])
      .split("\n")
      .filter(Boolean)
      .map((p) => p.split("/").pop()!),
  );
  return { servers: servers(), warnings: warnings(), vms, audit: auditEvents(since) };
}

/** Everything one row must show, from what was observed once for all rows. */
function assertRow(row: SemanticRow, seen: Observed): void {
  assertReason(row, seen.servers.get(row.object));
  assert.ok(seen.warnings.has(`${row.object}/${row.reason}`), `a Warning Event ${row.reason}`);
  assert.ok(!seen.vms.has(short(row.hostname)), "no VM of the short name");
  if (row.reason !== "VMNameConflict") assert.ok(!seen.vms.has(row.hostname), "no VM of the FQDN");
  assertOnlyOwnWrites(seen.audit, row.object);
  const statusWrite = seen.audit.some(
    (e) =>
      e.verb === "update" &&
      e.objectRef?.subresource === "status" &&
      e.objectRef.name === row.object &&
      madeBy(op)(e),
  );
  assert.ok(statusWrite, "the audit log shows the row's status write by this operator");
}

/** This test's operator's writes since `since`, other than to VirtualServers and Events in `ns`. */
function strayWrites(audit: AuditEvent[], allowedSecrets: Set<string> = new Set()): string[] {
  return audit
    .filter((e) => WRITE_VERBS.has(e.verb) && madeBy(op)(e))
    .filter((e) => {
      const r = e.objectRef ?? {};
      if (r.namespace === ns && (r.resource === "virtualservers" || r.resource === "events"))
        return false;
      if (r.resource === "secrets" && r.namespace === OPERATOR_NS && allowedSecrets.has(r.name!))
        return false;
      return true;
    })
    .map(
      (e) =>
        `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.subresource ?? ""} ${e.objectRef?.namespace}/${e.objectRef?.name}`,
    );
}

/** What the operator may write about one object: its status, its finalizer/labels, its Events. */
function assertOnlyOwnWrites(audit: AuditEvent[], object: string): void {
  const own = audit.filter(
    (e) =>
      WRITE_VERBS.has(e.verb) &&
      (e.objectRef?.name === object || e.objectRef?.name?.startsWith(`${object}.`)),
  );
  for (const e of own) {
    const r = e.objectRef!;
    const ok =
      r.namespace === ns &&
      ((r.resource === "virtualservers" && ["patch", "update"].includes(e.verb)) ||
        (r.resource === "events" && ["create", "patch"].includes(e.verb)));
    assert.ok(ok, `unexpected write ${e.verb} ${r.resource}/${r.subresource ?? ""} ${r.name}`);
  }
}

/** The servers of the other groups have settled into Installing: their own writes are done. */
async function othersInstalling(names = ["http-a", "http-b", "mco-m"]): Promise<void> {
  for (const name of names)
    await waitFor(
      `${name} Installing`,
      () => getVS(ns, name)?.status?.phase === "Installing",
      120_000,
    );
}

test("semantic: vsop refuses each accepted object with its reason, and writes nothing in vSphere", async (t) => {
  await othersInstalling();
  // A VM of another owner with the name the FQDN class would give sem-squatted.
  govc([
    ...["vm.create", "-on=false", "-net", "VLAN-30", "-ds", "LocalDS_0"],
    ...["-pool", "/DC0/host/DC0_C0/Resources", host(15)],
  ]);
  const foreign = findVMs(host(15))[0]!;
  const since = new Date();
  const calls = await mutatingCalls();
  apply(...SEMANTIC_ROWS.map((r) => virtualServer(ns, r.object, r.hostname, r.className, LABELS)));
  await waitForCondition(ns, "sem-holder", "NameResolved", "True", undefined, 60_000);
  apply(...CONFLICT_ROWS.map((r) => virtualServer(ns, r.object, r.hostname, r.className, LABELS)));

  const rows = [...SEMANTIC_ROWS, ...CONFLICT_ROWS];
  const seen = await observe(rows, since);
  for (const row of rows) await t.test(row.name, () => assertRow(row, seen));
  await t.test("the holder keeps its name and address", () => {
    const holder = getVS(ns, "sem-holder")!;
    assert.equal(cond(holder, "NameResolved")?.status, "True");
    assert.equal(holder.status?.address, "10.12.30.249");
  });
  await t.test("none of them made a vSphere change or another Kubernetes write", async () => {
    assert.deepEqual(delta(calls, await mutatingCalls()), {}, "mutating SOAP requests");
    const after = findVMs(host(15));
    assert.equal(after.length, 1, "the foreign VM is alone");
    assert.equal(after[0]!.self.value, foreign.self.value);
    assert.equal(extraConfig(after[0]!)["vsop.owner-uid"], undefined, "and not marked");
    assert.deepEqual(strayWrites(auditEvents(since)), []);
  });
});

test("semantic: a template that gives the server a default route → TemplateError, never powered on", async (t) => {
  const row: SemanticRow = {
    name: "network-config with a default route → TemplateError",
    object: "sem-default-route",
    hostname: host(16),
    className: "bad-input-badnet",
    reason: "TemplateError",
    condition: "Installed",
    message: /network config is not allowed: ethernets\.\S+ sets gateway4/,
  };
  await othersInstalling();
  const since = new Date();
  const calls = await mutatingCalls();
  apply(virtualServer(ns, row.object, row.hostname, row.className, LABELS));
  await t.test(row.name, async () => {
    const vs = await waitForCondition(ns, row.object, "Ready", "False", row.reason, 90_000);
    assert.match(cond(vs, "Ready")!.message, row.message);
    assert.equal(cond(vs, "Installed")?.reason, "TemplateError");
    // The VM exists (the template is rendered for it), but nothing was done to it after that.
    const [vm, ...more] = findVMs(short(row.hostname));
    assert.ok(vm && more.length === 0, "one VM");
    assert.equal(vm.runtime.powerState, "poweredOff", "never booted into a bad network");
    const gi = Object.keys(extraConfig(vm)).filter((k) => k.startsWith("guestinfo."));
    assert.deepEqual(gi, [], "no install data written to the VM");
    const changes = delta(calls, await mutatingCalls());
    assert.deepEqual(Object.keys(changes), ["CreateVM_Task"], JSON.stringify(changes));
    assert.equal(changes.CreateVM_Task, 1);
    // Its install record (the token) is the one write vsop makes besides the object's own.
    const install = new Set([`vsop-install-${vs.metadata.uid}`]);
    assert.deepEqual(strayWrites(auditEvents(since), install), []);
  });
});

// --- provisioning HTTP ------------------------------------------------------------------------------

interface HttpReply {
  status: number;
  headers: http.IncomingHttpHeaders;
}

/** One raw request (no URL normalisation, any method, headers and body as given). */
function request(
  method: string,
  rawPath: string,
  opts: { headers?: Record<string, string>; body?: Buffer | string; chunked?: Buffer } = {},
): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port: op.provisioningPort,
      method,
      path: rawPath,
      headers: opts.headers,
      signal: AbortSignal.timeout(15_000),
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    // The server may answer and close before it read the whole body (413): that is its answer.
    req.on("error", (err) => setTimeout(() => reject(err), 500));
    if (opts.chunked) req.write(opts.chunked);
    req.end(opts.body);
  });
}

interface RecordState {
  resourceVersion: string;
  keys: string[];
  token: string;
}

function installRecord(uid: string): RecordState | undefined {
  const r = readInstallRecord(uid);
  return (
    r && {
      resourceVersion: r.resourceVersion,
      keys: Object.keys(r.fields).sort(),
      token: r.fields.token ?? "",
    }
  );
}

test("provisioning HTTP: wrong methods, sizes, paths and tokens change nothing", async (t) => {
  await othersInstalling();
  const a = getVS(ns, "http-a")!;
  const b = getVS(ns, "http-b")!;
  const tA = installToken(a.metadata.uid);
  const tB = installToken(b.metadata.uid);
  const unknown = randomBytes(32).toString("base64url");
  const recordA = installRecord(a.metadata.uid)!;
  const recordB = installRecord(b.metadata.uid)!;
  assert.ok(recordA.token === tA && recordB.token === tB);
  /** Both servers' install records and status, each kind in one kubectl call. */
  const unchanged = (what: string) => {
    const secrets = getJSON<{
      items: {
        metadata: { name: string; resourceVersion: string };
        data?: Record<string, string>;
      }[];
    }>([
      ...["-n", OPERATOR_NS, "get", "secret"],
      ...[a, b].map((v) => `vsop-install-${v.metadata.uid}`),
    ]).items;
    const servers = getJSON<{ items: VS[] }>(["-n", ns, "get", "vsrv", "http-a", "http-b"]).items;
    for (const [i, was, record] of [
      [0, a, recordA],
      [1, b, recordB],
    ] as const) {
      const s = secrets[i]!;
      assert.equal(s.metadata.name, `vsop-install-${was.metadata.uid}`);
      assert.deepEqual(
        {
          resourceVersion: s.metadata.resourceVersion,
          keys: Object.keys(s.data ?? {}).sort(),
          token: Buffer.from(s.data?.token ?? "", "base64").toString("utf8"),
        },
        record,
        `${was.metadata.name}'s install record (${what})`,
      );
      const now = servers[i]!;
      assert.deepEqual(
        now.status?.install,
        was.status?.install,
        `${was.metadata.name}'s status.install`,
      );
      assert.notEqual(cond(now, "Installed")?.status, "True", `${was.metadata.name} not Installed`);
    }
  };
  const big = Buffer.alloc(100 * 1024, 0x61);
  const rows: [string, () => Promise<HttpReply>, number, string?][] = [
    ["GET /bootstrap (keys are POST only)", () => request("GET", `/bootstrap/${tA}`), 405, "POST"],
    ["PUT /bootstrap", () => request("PUT", `/bootstrap/${tA}`, { body: "x" }), 405, "POST"],
    ["POST /ks (kickstarts are GET only)", () => request("POST", `/ks/${tA}`), 405, "GET"],
    ["HEAD /ks", () => request("HEAD", `/ks/${tA}`), 405, "GET"],
    ["GET /built (completion is POST only)", () => request("GET", `/built/${tA}`), 405, "POST"],
    ["DELETE /built", () => request("DELETE", `/built/${tA}`), 405, "POST"],
    [
      "POST /built declaring a 1 MiB body",
      () => request("POST", `/built/${tA}`, { headers: { "content-length": String(1 << 20) } }),
      413,
    ],
    [
      "POST /bootstrap with a 100 KiB chunked body",
      () => request("POST", `/bootstrap/${tA}`, { chunked: big }),
      413,
    ],
    [
      "GET /ks with 40 KiB of headers",
      () => request("GET", `/ks/${tA}`, { headers: { "x-padding": "p".repeat(40 * 1024) } }),
      431,
    ],
    [
      "path traversal from /ks to /built",
      () => request("POST", `/ks/${tA}/../../built/${tA}`),
      404,
    ],
    ["encoded traversal as the token", () => request("GET", "/ks/..%2F..%2Fetc%2Fpasswd"), 404],
    ["token with a NUL byte appended", () => request("POST", `/built/${tA}%00`), 404],
    ["token with a file extension", () => request("POST", `/bootstrap/${tA}.sh`), 404],
    ["no token", () => request("GET", "/ks/"), 404],
    ["well-formed token nobody issued", () => request("POST", `/bootstrap/${unknown}`), 404],
  ];
  for (const [name, send, status, allow] of rows) {
    await t.test(`${name} → ${status}`, async () => {
      const res = await send();
      assert.equal(res.status, status);
      if (allow) assert.equal(res.headers.allow, allow);
      unchanged(name);
    });
  }

  await t.test(
    "POST /built with a JSON body naming B → 204 for A only (the body is never read)",
    async () => {
      const body = JSON.stringify({ hostname: B, token: tB, installed: true });
      const res = await request("POST", `/built/${tA}`, {
        headers: { "content-type": "application/json", "content-length": String(body.length) },
        body,
      });
      assert.equal(res.status, 204);
      const installed = await waitForCondition(
        ns,
        "http-a",
        "Installed",
        "True",
        undefined,
        30_000,
      );
      assert.ok(installed.status?.install, "A installed");
      assert.deepEqual(installRecord(b.metadata.uid), recordB, "B's install record");
      assert.notEqual(cond(getVS(ns, "http-b"), "Installed")?.status, "True", "B not Installed");
    },
  );

  await t.test("the spent token → 410 on every route, and nothing changes", async () => {
    const spent = await waitFor("A's token spent", () => {
      const r = installRecord(a.metadata.uid);
      return r && r.token === "" ? r : undefined;
    });
    const completedAt = (getVS(ns, "http-a")!.status?.install as { completedAt?: string })
      .completedAt;
    assert.equal((await request("GET", `/ks/${tA}`)).status, 410);
    assert.equal((await request("POST", `/bootstrap/${tA}`)).status, 410);
    assert.equal((await request("POST", `/built/${tA}`)).status, 410);
    assert.deepEqual(installRecord(a.metadata.uid), spent, "A's install record");
    const install = getVS(ns, "http-a")!.status?.install as { completedAt?: string };
    assert.equal(install.completedAt, completedAt, "no second completion");
  });

  await t.test("the token of a deleted server → 404; nothing comes back", async () => {
    kubectl(["-n", ns, "delete", "vsrv", "http-b", "--wait=true", "--timeout=60s"]);
    assert.equal(installRecord(b.metadata.uid), undefined, "B's install record is gone");
    assert.equal((await request("GET", `/ks/${tB}`)).status, 404);
    assert.equal((await request("POST", `/bootstrap/${tB}`)).status, 404);
    assert.equal((await request("POST", `/built/${tB}`)).status, 404);
    assert.equal(installRecord(b.metadata.uid), undefined, "no record re-created");
    assert.equal(getVS(ns, "http-b"), undefined, "no object re-created");
  });
});

// --- MCollective replies ----------------------------------------------------------------------------

/**
 * Listens where M's mcollectived would, before the operator can ask it anything. The broker is
 * shared with other stacks on the machine and may restart: the listener comes back by itself.
 */
async function startListening(): Promise<void> {
  const conn = await amqp.connect(stackEnv("VSOP_AMQP_URL"));
  mcoConn = conn;
  conn.on("error", () => undefined);
  conn.on("close", () => {
    if (!stopping) void relisten();
  });
  mcoChannel = await conn.createChannel();
  const { queue } = await mcoChannel.assertQueue("", { exclusive: true, autoDelete: true });
  await mcoChannel.bindQueue(queue, "mcollective_directed", M);
  await mcoChannel.consume(
    queue,
    (msg) => {
      if (!msg) return;
      const { requestid } = loadRuby(msg.content) as { requestid: string };
      requests.push({ msg, at: Date.now(), id: requestid });
    },
    { noAck: true },
  );
}

async function relisten(): Promise<void> {
  while (!stopping) {
    try {
      return await startListening();
    } catch {
      await sleep(1000);
    }
  }
}

/** The first request vsop sends M after `since` (its puppet#status install check). */
function nextRequest(since: number, timeoutMs = 60_000) {
  return waitFor("a request from vsop to M", () => requests.find((r) => r.at > since), timeoutMs);
}

const serverKey = () =>
  readFileSync(path.join(stackEnv("VSOP_MCO_DIR"), "server-private.pem"), "utf8");

/** puppet#status data as M would answer, with the statement signed by `identityKey`. */
function statusBody(requestid: string, identity: string, identityKey?: string): Buffer {
  const now = Math.floor(Date.now() / 1000);
  let data: Record<string, RubyValue> = {
    applying: false,
    enabled: true,
    idling: true,
    status: "idling",
    lastrun: 0,
    since_lastrun: now,
    message: MARKER,
  };
  if (identityKey) {
    const statement = JSON.stringify({
      requestid,
      identity,
      agent: "puppet",
      action: "status",
      statuscode: 0,
      statusmsg: "OK",
      data,
    });
    data = {
      ...data,
      vsop_signed: statement,
      vsop_signature: sign("sha256", Buffer.from(statement), identityKey).toString("base64"),
    };
  }
  return encodeReplyBody({ statuscode: 0, statusmsg: "OK", data });
}

function envelope(
  requestid: string,
  body: Buffer,
  opts: { sender?: string; hash?: string | null } = {},
): Buffer {
  const fields = {
    senderid: opts.sender ?? M,
    requestid,
    senderagent: "puppet",
    msgtime: Math.floor(Date.now() / 1000),
    body,
  };
  if (opts.hash === null) return dumpRuby(symbolHash(fields));
  return encodeReplyEnvelope({ ...fields, hash: opts.hash ?? signBody(body, serverKey()) });
}

test("MCollective replies: malformed, oversized, unsigned, wrong-sender and replayed replies change nothing", async (t) => {
  await othersInstalling(["mco-m"]);
  // M's installer fetches its keys (so vsop knows M's identity key and asks M whether it is
  // installed), but no mcollectived runs: only this test answers.
  const url = await waitFor("M's bootstrap URL", () => {
    try {
      return bootstrapURLIn(readGuestinfo(short(M)).userData);
    } catch {
      return undefined;
    }
  });
  const keys = await waitFor("M's keys", async () => {
    const r = await fetchBootstrap(url);
    return r.status === 503 ? undefined : r;
  });
  assert.equal(keys.status, 200);
  const identityKey = bootstrapFiles(keys.body)[IDENTITY_KEY_PATH]!;
  assert.ok(identityKey, "M got its identity key");
  const otherIdentity = generateKeyPairSync("ec", { namedCurve: "P-256" })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString();

  type Request = (typeof requests)[number];
  /** A request of vsop's still waiting for its answer (it waits 10 s), or the next one. */
  const live = async (): Promise<Request> => {
    const last = requests.at(-1);
    return last && Date.now() - last.at < 4000 ? last : nextRequest(Date.now());
  };
  const send = (to: Request, message: Buffer) =>
    mcoChannel.sendToQueue(to.msg.properties.replyTo as string, message);

  const first = await live();
  const installedBefore = cond(getVS(ns, "mco-m"), "Installed");
  assert.equal(installedBefore?.status, "False");
  const logStart = op.logs().length;
  const unchanged = () => {
    const vs = getVS(ns, "mco-m")!;
    assert.deepEqual(cond(vs, "Installed"), installedBefore, "Installed unchanged");
    assert.equal(vs.status?.phase, "Installing");
  };
  const drops = async (reason: string) => metric(await metricsBody(), DROPPED, { reason });
  const dropLines = () =>
    op
      .logs()
      .slice(logStart)
      .split("\n")
      .filter((l) => l.includes("dropped a reply"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  /** Publishes one hostile message, then waits until its drop is counted and logged. */
  const rejected = async (to: Request, message: Buffer, reason: string) => {
    const before = await drops(reason);
    const lines = dropLines().filter((d) => d.reason === reason).length;
    send(to, message);
    await waitFor(`a ${reason} drop`, async () => (await drops(reason)) === before + 1, 15_000);
    await waitFor(`the ${reason} drop logged`, () =>
      dropLines().filter((d) => d.reason === reason).length === lines + 1 ? true : undefined,
    );
    unchanged();
  };

  // Each row answers a request vsop still waits for, so only the row's flaw can be the reason.
  const genuine = (r: Request) => statusBody(r.id, M, identityKey);
  const rows: [string, (r: Request) => Buffer, string][] = [
    [
      "a validly signed reply just over the 256 KiB limit",
      (r) => {
        const body = encodeReplyBody({
          statuscode: 0,
          statusmsg: "OK",
          data: { message: MARKER, padding: "x".repeat(257 * 1024) },
        });
        return envelope(r.id, body);
      },
      "oversized",
    ],
    ["a truncated reply", (r) => envelope(r.id, genuine(r)).subarray(0, 200), "malformed"],
    [
      "an envelope that is a Marshal array, not a hash",
      (r) => dumpRuby([M, r.id, MARKER]),
      "malformed",
    ],
    [
      "an unsigned reply (no :hash)",
      (r) => envelope(r.id, genuine(r), { hash: null }),
      "malformed",
    ],
    ["an empty signature", (r) => envelope(r.id, genuine(r), { hash: "" }), "bad_signature"],
    [
      "the server key's signature of another body",
      (r) =>
        envelope(r.id, genuine(r), {
          hash: signBody(genuine(r).subarray(1), serverKey()),
        }),
      "bad_signature",
    ],
    [
      "a validly signed reply from a server that was not asked",
      (r) => envelope(r.id, statusBody(r.id, host(244), otherIdentity), { sender: host(244) }),
      "unexpected_sender",
    ],
    [
      "a validly signed body that is not Marshal",
      (r) => envelope(r.id, Buffer.from(`not marshal ${MARKER}`)),
      "malformed",
    ],
    [
      "a validly signed body without :statuscode",
      (r) => envelope(r.id, dumpRuby(symbolHash({ statusmsg: "OK", data: MARKER }))),
      "malformed",
    ],
  ];
  for (const [name, message, reason] of rows)
    await t.test(`${name} → dropped (${reason})`, async () => {
      const r = await live();
      await rejected(r, message(r), reason);
    });

  // Once vsop asked again, the first request is over (one install check at a time).
  await nextRequest(first.at);
  await t.test(
    "M's genuine answer to a finished request, replayed → dropped (unknown_request)",
    async () => rejected(await live(), envelope(first.id, genuine(first)), "unknown_request"),
  );

  /** Answers the live request with `message` and waits for vsop to refuse to believe it. */
  const identityRefused = async (message: (r: Request) => Buffer, why: RegExp) => {
    const from = op.logs().length;
    const r = await live();
    send(r, message(r));
    await waitFor(
      "vsop to refuse the answer",
      () =>
        op
          .logs()
          .slice(from)
          .split("\n")
          .some((l) => l.includes("not signed by the server's key") && why.test(l)),
      30_000,
    );
    unchanged();
    // The next row needs a request this answer did not settle.
    await nextRequest(r.at);
  };
  await t.test(
    "a reply signed with the shared key only (no identity statement) → not believed",
    () => identityRefused((r) => envelope(r.id, statusBody(r.id, M)), /carries no signature/),
  );
  await t.test("M's genuine body for an earlier request under the current id → not believed", () =>
    identityRefused((r) => envelope(r.id, genuine(first)), /signed for another request/),
  );
  await t.test("a statement signed with another server's identity key → not believed", () =>
    identityRefused(
      (r) => envelope(r.id, statusBody(r.id, M, otherIdentity)),
      /not signed by the server's own identity key/,
    ),
  );

  await t.test("no message bytes in the log; the operator is up", async () => {
    assert.ok(!op.logs().slice(logStart).includes(MARKER), "no message bytes in the log");
    assert.equal(op.proc.exitCode, null);
    assert.equal((await scrape(op.healthPort, "/healthz")).status, 200);
  });

  // The control: the same path with M's genuine answer is believed, so the rows above could fail.
  await t.test("control: M's genuine answer to the current request → Installed", async () => {
    const r = await live();
    send(r, envelope(r.id, genuine(r)));
    await waitForCondition(ns, "mco-m", "Installed", "True", undefined, 30_000);
  });
});

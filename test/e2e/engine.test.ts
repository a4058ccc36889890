// The controller engine against the real apiserver: converged objects cost zero writes, scoping
// by namespace and label selector, servers read in list shards at start, and a clean exit on
// SIGTERM.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNS,
  apply,
  auditEvents,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  metric,
  nodeDown,
  nodeUp,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  WRITE_VERBS,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { LIST_SHARD_LABEL, listShardOf } from "../../src/api/list-shards.js";

const CLASS = "engine-standard";
let ns: string;
let other: string;
let op: Operator;
const FLAGS = () => [
  "--namespace",
  ns,
  "--label-selector",
  "vsop-test=engine",
  "--resync-period",
  "1s",
  "--workers",
  "2",
];

// A class the start test needs absent until it creates it: cluster-wide, so removed before and
// after (a second run on the same stack would find the first run's).
const MISSING_CLASS = "engine-no-such-class";

before(() => {
  installVsop();
  kubectl(["delete", "virtualserverclass", MISSING_CLASS, "--ignore-not-found"]);
  ns = createNamespace("engine");
  other = createNamespace("engine-other");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.50", "eng-prod-1.example.test");
  addDNS("10.12.30.51", "eng-prod-2.example.test");
  nodeUp("eng-prod-1.example.test");
  op = startOperator("engine", FLAGS());
});

after(async () => {
  await deleteServers(ns);
  await deleteServers(other);
  assert.equal(await op.stop(), 0);
  nodeDown("eng-prod-1.example.test");
  kubectl(["delete", "virtualserverclass", MISSING_CLASS, "--ignore-not-found"]);
});

test("a converged object costs zero API writes on resync", async () => {
  apply(virtualServer(ns, "eng", "eng-prod-1.example.test", CLASS, { "vsop-test": "engine" }));
  const ready = await waitForCondition(ns, "eng", "Ready", "True", undefined, 120_000);
  assert.equal(ready.status?.observedGeneration, ready.metadata.generation);
  await sleep(1500); // let the last watch events settle
  const since = new Date();
  const before = metric((await scrape(op.metricsPort)).body, "vsop_reconciles_total");
  await sleep(5000);
  const reconciles = metric((await scrape(op.metricsPort)).body, "vsop_reconciles_total") - before;
  assert.ok(reconciles >= 3, `resync reconciled the object (${reconciles} times)`);
  // Writes by this operator's identity to this test's namespace (other suites may run operators too).
  const writes = auditEvents(since).filter(
    (e) => WRITE_VERBS.has(e.verb) && e.objectRef?.namespace === ns,
  );
  assert.deepEqual(
    writes.map((e) => `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.subresource ?? ""}`),
    [],
  );
});

test("objects outside --namespace or --label-selector are left alone", async () => {
  apply(
    virtualServer(other, "elsewhere", "eng-prod-2.example.test", CLASS, { "vsop-test": "engine" }),
  );
  apply(virtualServer(ns, "unlabelled", "eng-prod-2.example.test", CLASS, {}));
  await sleep(4000);
  assert.equal(getVS(other, "elsewhere")?.status, undefined);
  assert.equal(getVS(ns, "unlabelled")?.status, undefined);
  assert.equal(getVS(ns, "unlabelled")?.metadata.finalizers, undefined);
});

test("at start every server is read, by list shard or without one; the watch goes on after", async () => {
  // The converged server from the first test carries the list shard vsop gave it.
  const eng = getVS(ns, "eng")!;
  assert.equal(eng.metadata.labels?.[LIST_SHARD_LABEL], listShardOf("eng"));
  // Servers whose class is missing keep the labels they were given: shards on both sides of
  // the split, a value out of range, none.
  const labels: Record<string, Record<string, string>> = {
    "in-shard-0": { [LIST_SHARD_LABEL]: "0" },
    "in-shard-15": { [LIST_SHARD_LABEL]: "15" },
    "odd-shard": { [LIST_SHARD_LABEL]: "99" },
    "no-shard": {},
  };
  for (const [name, l] of Object.entries(labels))
    apply(
      virtualServer(ns, name, `${name}.example.test`, MISSING_CLASS, {
        "vsop-test": "engine",
        ...l,
      }),
    );
  for (const name of Object.keys(labels))
    await waitForCondition(ns, name, "Ready", "False", "ClassNotFound");

  assert.equal(await op.stop(), 0);
  op = startOperator("engine-restart", FLAGS());
  const synced = await waitFor("caches synced", () =>
    op
      .logs()
      .split("\n")
      .map((line) => (line.includes('"caches synced"') ? JSON.parse(line) : undefined))
      .find(Boolean),
  );
  assert.equal(synced.servers, 5, "eng and the four servers, each once");

  // Changes after the start come through the one watch: the class appears, the servers go on,
  // and vsop files each under its own shard.
  applyClass(MISSING_CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  for (const name of Object.keys(labels))
    await waitFor(`${name} filed under its shard`, () =>
      getVS(ns, name)?.metadata.labels?.[LIST_SHARD_LABEL] === listShardOf(name) ? true : undefined,
    );
});

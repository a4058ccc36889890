import { test } from "node:test";
import assert from "node:assert/strict";
import v8 from "node:v8";
import pino from "pino";
import { Informer, type KubeObject } from "../../src/controller/informer.js";
import { KubeError } from "../../src/controller/kube.js";
import {
  listEnd as scriptedListEnd,
  scriptedKube,
  until,
  type ListScript,
  type WatchScript,
} from "../support/scripted-watch.js";
import { decodeWithoutManagedFields, ListSplitter } from "../../src/controller/list-stream.js";
import { LAST_APPLIED, trimObject } from "../../src/controller/trim.js";

// --- the list splitter ---------------------------------------------------------------------------

const tricky = {
  apiVersion: "v1",
  kind: "Thing",
  metadata: { name: "a", resourceVersion: "7" },
  spec: {
    text: 'braces } { ] [ , a "quoted" \\ backslash \\" and ünïcødé ✓',
    list: [[1], { x: [] }],
  },
};

function split(body: string, sizes: (i: number) => number) {
  const items: unknown[] = [];
  const s = new ListSplitter<unknown>((it) => items.push(it));
  const bytes = Buffer.from(body);
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = Math.max(1, sizes(k));
    s.write(bytes.subarray(i, i + n));
    i += n;
  }
  return { items, envelope: s.end<{ kind: string; items: unknown[]; metadata: object }>() };
}

test("a list body is split into its items at any chunk boundary, envelope kept", () => {
  const list = {
    apiVersion: "v1",
    items: [tricky, { metadata: { name: "b" } }, tricky],
    kind: "ThingList",
    metadata: { resourceVersion: "42", continue: "" },
  };
  const body = JSON.stringify(list, null, 1); // whitespace between tokens too
  for (const sizes of [() => 1, () => 7, (k: number) => (k * 37) % 101, () => body.length]) {
    const { items, envelope } = split(body, sizes);
    assert.deepEqual(items, list.items);
    assert.deepEqual(envelope, { ...list, items: [] });
  }
});

test("metadata before items and an empty list are read too", () => {
  const before = split(
    JSON.stringify({ kind: "L", metadata: { resourceVersion: "9" }, items: [tricky] }),
    () => 5,
  );
  assert.deepEqual(before.items, [tricky]);
  assert.deepEqual(before.envelope.metadata, { resourceVersion: "9" });
  const empty = split('{"items":[],"metadata":{"resourceVersion":"3"}}', () => 2);
  assert.deepEqual(empty.items, []);
  assert.deepEqual(empty.envelope.metadata, { resourceVersion: "3" });
});

test("metadata.managedFields is cut before parsing (null), whatever the chunking; not elsewhere", () => {
  const withFields = (name: string) => ({
    apiVersion: "v1",
    kind: "Thing",
    metadata: {
      annotations: { a: '"managedFields":[' },
      managedFields: [{ apiVersion: "v1", fieldsV1: { "f:spec": { "f:x": {} } }, manager: "m]" }],
      name,
    },
    spec: { managedFields: ["kept"] },
  });
  const list = { items: [withFields("a"), withFields("b")], metadata: { resourceVersion: "1" } };
  const body = JSON.stringify(list);
  for (const sizes of [() => 1, () => 3, (k: number) => (k * 13) % 29, () => body.length]) {
    const { items } = split(body, sizes);
    assert.deepEqual(
      items,
      list.items.map((o) => ({ ...o, metadata: { ...o.metadata, managedFields: null } })),
    );
  }
});

test("a list body cut short is an error, not a shorter list", () => {
  const s = new ListSplitter<unknown>(() => undefined);
  s.write(Buffer.from(JSON.stringify({ items: [tricky, tricky] }).slice(0, 60)));
  assert.throws(() => s.end(), /ended early/);
});

// --- trimming ----------------------------------------------------------------------------------

test("trimObject keeps the metadata vsop reads and drops managedFields and last-applied", () => {
  const obj = {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: {
      name: "web-1",
      namespace: "prod",
      uid: "u-1",
      generation: 3,
      resourceVersion: "100",
      creationTimestamp: "2026-01-01T00:00:00Z",
      deletionTimestamp: "2026-01-02T00:00:00Z",
      labels: { a: "b" },
      finalizers: ["provisioning.vsop.dev/vm"],
      annotations: {
        [LAST_APPLIED]: "{...}",
        "provisioning.vsop.dev/puppet-run-requested-at": "t",
      },
      managedFields: [{ manager: "kubectl", fieldsV1: { "f:spec": {} } }],
      ownerReferences: [{ name: "x" }],
      selfLink: "/apis/x",
    },
    spec: { hostname: "web-1.example.test" },
    status: { phase: "Ready", conditions: [{ type: "Ready" }] },
  };
  const { spec, status } = structuredClone(obj);
  const trimmed = trimObject(obj) as unknown as typeof obj;
  assert.deepEqual(trimmed.metadata, {
    name: "web-1",
    namespace: "prod",
    uid: "u-1",
    generation: 3,
    resourceVersion: "100",
    creationTimestamp: "2026-01-01T00:00:00Z",
    deletionTimestamp: "2026-01-02T00:00:00Z",
    labels: { a: "b" },
    finalizers: ["provisioning.vsop.dev/vm"],
    annotations: { "provisioning.vsop.dev/puppet-run-requested-at": "t" },
  });
  assert.deepEqual(trimmed.spec, spec);
  assert.deepEqual(trimmed.status, status);
  assert.equal(trimmed.apiVersion, "provisioning.vsop.dev/v1alpha1");
});

test("trimObject drops annotations that held only last-applied", () => {
  const t = trimObject({ metadata: { name: "a", annotations: { [LAST_APPLIED]: "{}" } } });
  assert.deepEqual(t.metadata, { name: "a" });
});

test("trimObject leaves compact objects: no V8 hash-table metadata or annotations", () => {
  // A `delete` on an object makes V8 keep its properties in a hash table, several times larger;
  // the cache holds one metadata per server.
  v8.setFlagsFromString("--allow-natives-syntax");
  const fast = new Function("o", "return %HasFastProperties(o)") as (o: object) => boolean;
  const parsed = (annotations: object) =>
    JSON.parse(JSON.stringify({ metadata: { name: "a", namespace: "n", annotations } })) as {
      metadata: { annotations?: object };
    };
  const only = trimObject(parsed({ [LAST_APPLIED]: "{}" }));
  assert.ok(fast(only.metadata), "metadata after dropping the only annotation");
  const more = trimObject(parsed({ [LAST_APPLIED]: "{}", note: "x" }));
  assert.ok(fast(more.metadata), "metadata with other annotations");
  assert.ok(fast(more.metadata.annotations!), "the other annotations");
});

// --- the informer against a scripted API server ---------------------------------------------------

interface Obj extends KubeObject {
  metadata: KubeObject["metadata"] & { managedFields?: unknown[] };
  spec?: { v: number };
}

const obj = (name: string, rv: string, v = 0): Obj => ({
  metadata: { name, namespace: "ns", resourceVersion: rv, managedFields: [{ manager: "m" }] },
  spec: { v },
});

type ListStep = ListScript<Obj>;
type WatchStep = WatchScript<Obj>;

/** A Kube whose lists and watches answer from scripts, in order, recording each query. */
function scripted(lists: ListStep[], watches: WatchStep[]) {
  const listQueries: Record<string, string>[] = [];
  const watchQueries: Record<string, string>[] = [];
  const { kube } = scriptedKube<Obj>({
    list: (query) => (listQueries.push(query), lists.shift()),
    watch: (query) => (watchQueries.push(query), watches.shift()),
  });
  return { kube, listQueries, watchQueries };
}

const silent = pino({ level: "silent" });

test("the first list reads the watch cache (resourceVersion=0) and caches trimmed objects", async () => {
  const { kube, listQueries, watchQueries } = scripted(
    [{ items: [obj("a", "5"), obj("b", "6")], rv: "10" }],
    ["hang"],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent, labelSelector: "l=1" });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}`));
  inf.start();
  await inf.waitForSync();
  await until("the watch", () => watchQueries.length === 1);
  await inf.stop();
  assert.deepEqual(listQueries, [{ labelSelector: "l=1", resourceVersion: "0" }]);
  assert.equal(watchQueries[0]!.resourceVersion, "10");
  assert.deepEqual(events, ["add a", "add b"]);
  assert.equal(inf.get("ns/a")!.metadata.managedFields, undefined);
});

test("handlers are told the key each object is cached under, a late handler too", async () => {
  const { kube, watchQueries } = scripted(
    [{ items: [obj("a", "5")], rv: "10" }],
    [
      [
        { type: "ADDED", object: obj("b", "11") },
        { type: "DELETED", object: obj("a", "12") },
      ],
    ],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent });
  const told: string[] = [];
  inf.on((e, _o, _old, key) => told.push(`${e} ${key}`));
  inf.start();
  await until("the watch's events", () => told.length === 3);
  const late: string[] = [];
  inf.on((e, _o, _old, key) => late.push(`${e} ${key} ${inf.get(key)!.metadata.name}`));
  await inf.stop();
  assert.ok(watchQueries.length >= 1);
  assert.deepEqual(told, ["add ns/a", "add ns/b", "delete ns/a"]);
  assert.deepEqual(late, ["add ns/b b"]);
});

test("after 410 Gone the relist is no older than the cache, and emits what changed", async () => {
  const { kube, listQueries } = scripted(
    [
      { items: [obj("a", "5"), obj("b", "6"), obj("c", "7")], rv: "10" },
      // b changed, c deleted, d created while the watch was gone
      { items: [obj("a", "12"), obj("b", "14", 1), obj("d", "15")], rv: "20" },
    ],
    [
      [
        { type: "MODIFIED", object: obj("a", "12") },
        { type: "ERROR", object: { code: 410, message: "too old" } as unknown as Obj },
      ],
      "hang",
    ],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}@${o.metadata.resourceVersion}`));
  inf.start();
  await until("the relist", () => listQueries.length === 2 && events.includes("delete c@7"));
  await inf.stop();
  assert.deepEqual(listQueries[1], { resourceVersion: "12", resourceVersionMatch: "NotOlderThan" });
  assert.deepEqual(events.slice(3), [
    "update a@12", // from the watch; the relist's a is the same version: no event
    "update b@14",
    "add d@15",
    "delete c@7",
  ]);
  assert.deepEqual(
    inf
      .list()
      .map((o) => o.metadata.name)
      .sort(),
    ["a", "b", "d"],
  );
});

test("a relist the server cannot serve at our version falls back to a consistent read", async () => {
  const { kube, listQueries } = scripted(
    [
      { items: [obj("a", "5")], rv: "10" },
      { fail: new KubeError(410, "Expired", "too old", "GET", "/x") },
      { items: [obj("a", "30")], rv: "31" },
    ],
    [[{ type: "ERROR", object: { code: 410 } as unknown as Obj }], "hang"],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent });
  inf.start();
  await until(
    "three lists",
    () => listQueries.length === 3 && inf.get("ns/a")?.metadata.resourceVersion === "30",
  );
  await inf.stop();
  assert.deepEqual(listQueries[2], {});
});

test("a list that fails midway is listed again, never watched from a version it lacks", async () => {
  const { kube, listQueries, watchQueries } = scripted(
    [
      { fail: new Error("connection reset"), after: [obj("a", "5")] },
      { items: [obj("b", "8")], rv: "9" },
    ],
    ["hang"],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}`));
  inf.start();
  await inf.waitForSync();
  await until("the watch", () => watchQueries.length === 1);
  await inf.stop();
  assert.equal(listQueries.length, 2);
  assert.deepEqual(listQueries[1], { resourceVersion: "0" });
  assert.equal(watchQueries[0]!.resourceVersion, "9");
  // a, from the broken list, is gone once a whole list says so
  assert.deepEqual(events, ["add a", "add b", "delete a"]);
});

// --- streamed lists (sendInitialEvents) ----------------------------------------------------------

const listEnd = (rv: string) => scriptedListEnd<Obj>(rv);

test("a streamed list: objects until the end bookmark sync the cache, and the watch goes on", async () => {
  const { kube, listQueries, watchQueries } = scripted(
    [],
    [
      [
        { type: "ADDED", object: obj("a", "5") },
        { type: "ADDED", object: obj("b", "6") },
        listEnd("10"),
        { type: "MODIFIED", object: obj("a", "12", 1) },
      ],
      "hang",
    ],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent, streamingList: true });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}@${o.metadata.resourceVersion}`));
  inf.start();
  await inf.waitForSync();
  await until("the next watch", () => watchQueries.length === 2);
  await inf.stop();
  assert.equal(listQueries.length, 0);
  assert.deepEqual(watchQueries[0], {
    sendInitialEvents: "true",
    resourceVersionMatch: "NotOlderThan",
    allowWatchBookmarks: "true",
    timeoutSeconds: "300",
  });
  // The stream ended after the list: a plain watch from the last version seen.
  assert.equal(watchQueries[1]!.sendInitialEvents, undefined);
  assert.equal(watchQueries[1]!.resourceVersion, "12");
  assert.deepEqual(events, ["add a@5", "add b@6", "update a@12"]);
  assert.equal(inf.get("ns/a")!.metadata.managedFields, undefined);
});

test("a server that cannot stream lists gets a plain list, and is not asked to again", async () => {
  const refusal = {
    type: "ERROR",
    object: {
      code: 500,
      message:
        "a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled",
    } as unknown as Obj,
  } as const;
  const { kube, listQueries, watchQueries } = scripted(
    [
      { items: [obj("a", "5")], rv: "10" },
      { items: [obj("a", "5")], rv: "20" },
    ],
    [[refusal], [{ type: "ERROR", object: { code: 410 } as unknown as Obj }], "hang"],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent, streamingList: true });
  inf.start();
  await inf.waitForSync();
  await until("the relist after 410", () => listQueries.length === 2 && watchQueries.length === 3);
  await inf.stop();
  assert.equal(watchQueries[0]!.sendInitialEvents, "true");
  assert.deepEqual(listQueries[0], { resourceVersion: "0" });
  assert.equal(watchQueries[1]!.sendInitialEvents, undefined);
  assert.equal(watchQueries[2]!.sendInitialEvents, undefined);
});

test("a streamed list refused with an HTTP error (an older API server) falls back too", async () => {
  const { kube, listQueries } = scripted(
    [{ items: [obj("a", "5")], rv: "10" }],
    [
      {
        fail: new KubeError(
          400,
          "BadRequest",
          "resourceVersionMatch is forbidden for watch",
          "WATCH",
          "/x",
        ),
      },
      "hang",
    ],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent, streamingList: true });
  inf.start();
  await inf.waitForSync();
  await inf.stop();
  assert.equal(listQueries.length, 1);
  assert.ok(inf.get("ns/a"));
});

test("a streamed list cut before its end bookmark is not a synced cache; the next one is", async () => {
  const { kube, watchQueries } = scripted(
    [],
    [
      [{ type: "ADDED", object: obj("a", "5") }],
      [{ type: "ADDED", object: obj("b", "8") }, listEnd("9")],
      "hang",
    ],
  );
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent, streamingList: true });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}`));
  inf.start();
  await until("a stream retried", () => watchQueries.length >= 2);
  await inf.waitForSync();
  await inf.stop();
  assert.equal(watchQueries[1]!.sendInitialEvents, "true");
  // a, from the cut stream, is gone once a whole list says so
  assert.deepEqual(events, ["add a", "add b", "delete a"]);
  assert.deepEqual(
    inf.list().map((o) => o.metadata.name),
    ["b"],
  );
});

test("a handler added after objects are cached is told them as adds", async () => {
  const { kube } = scripted([{ items: [obj("a", "5"), obj("b", "6")], rv: "10" }], ["hang"]);
  const inf = new Informer<Obj>(kube, { path: "/x", logger: silent });
  inf.start();
  await inf.waitForSync();
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}`));
  await inf.stop();
  assert.deepEqual(events, ["add a", "add b"]);
});

// --- managedFields cut from one object's JSON -----------------------------------------------------

test("decodeWithoutManagedFields cuts metadata.managedFields before parsing, and nothing else", () => {
  const o = {
    type: "MODIFIED",
    object: {
      apiVersion: "v1",
      metadata: {
        annotations: { note: 'a "managedFields":[ in a string ] } and \\ backslashes \\' },
        managedFields: [{ manager: "m", fieldsV1: { "f:spec": { ".": {}, 'k:{"a":"]"}': {} } } }],
        name: "x",
      },
      spec: { list: [[1], { y: "]" }] },
    },
  };
  const cut = JSON.parse(decodeWithoutManagedFields(Buffer.from(JSON.stringify(o)))) as typeof o;
  assert.equal(cut.object.metadata.managedFields, null);
  assert.deepEqual(
    {
      ...cut,
      object: {
        ...cut.object,
        metadata: { ...cut.object.metadata, managedFields: o.object.metadata.managedFields },
      },
    },
    o,
  );
  const none = JSON.stringify({ metadata: { name: "x" } });
  assert.equal(decodeWithoutManagedFields(Buffer.from(none)), none);
  const short = JSON.stringify(o).slice(0, 150);
  assert.equal(decodeWithoutManagedFields(Buffer.from(short)), short);
  // A range of a larger buffer: only its own bytes.
  const framed = Buffer.from(`xx${JSON.stringify(o)}\n${JSON.stringify(o)}`);
  const first = decodeWithoutManagedFields(framed, 2, framed.indexOf("\n"));
  assert.deepEqual(JSON.parse(first), cut);
});

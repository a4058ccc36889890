// An informer that lists in shards (label selectors read in parallel, api/list-shards.ts): each
// shard's list is whole at its own resourceVersion, and the one watch after them starts from the
// oldest. These tests drive it with scripted lists and watches, one script per label selector.
import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { LIST_SHARD_LABEL, listShardOf, listShardSelectors } from "../../src/api/list-shards.js";
import { compareVersions, Informer, type KubeObject } from "../../src/controller/informer.js";
import { KubeError, type Kube, type WatchEvent } from "../../src/controller/kube.js";
import {
  listEnd as scriptedListEnd,
  scriptedKube,
  until,
  type ListScript,
  type WatchScript,
} from "../support/scripted-watch.js";

interface Obj extends KubeObject {
  metadata: KubeObject["metadata"] & { labels?: Record<string, string> };
}

const obj = (name: string, rv: string): Obj => ({
  metadata: { name, namespace: "ns", resourceVersion: rv },
});
const added = (name: string, rv: string): WatchEvent<Obj> => ({
  type: "ADDED",
  object: obj(name, rv),
});
const modified = (name: string, rv: string): WatchEvent<Obj> => ({
  type: "MODIFIED",
  object: obj(name, rv),
});
const deleted = (name: string, rv: string): WatchEvent<Obj> => ({
  type: "DELETED",
  object: obj(name, rv),
});
const listEnd = (rv: string) => scriptedListEnd<Obj>(rv);

const A = "shard in (a)";
const B = "shard in (b)";
const REST = "shard notin (a,b)";
const USER = "team=x";

type WatchStep = WatchScript<Obj>;
type ListStep = ListScript<Obj>;

/**
 * A Kube whose watches and lists answer from one script per label selector (the user's selector
 * and the shard's, as the informer joins them); every request is recorded.
 */
function byShard(watches: Record<string, WatchStep[]>, lists: Record<string, ListStep[]> = {}) {
  return scriptedKube<Obj>({
    list: (query) => lists[query.labelSelector ?? ""]?.shift(),
    watch: (query) => watches[query.labelSelector ?? ""]?.shift(),
  });
}

const silent = pino({ level: "silent" });

/** The watch after the join below, from 10: it replays 11 and 12, which shard B already read. */
const REPLAY = [
  modified("b", "11"),
  added("c", "11"), // c was made at 11
  modified("c", "12"),
  modified("a", "13"),
  deleted("new", "14"),
];

/**
 * The outcome of the scripted join below (a, b, c in shards A and B, "new" unlabelled, then
 * REPLAY), the same whether the shards were streamed or listed.
 */
function assertJoined(events: string[], inf: Informer<Obj>) {
  assert.deepEqual(events, [
    "add a@5",
    "add b@11",
    "add c@12",
    "add new@3",
    "update a@13",
    "delete new@14",
  ]);
  assert.deepEqual(names(inf), ["a@13", "b@11", "c@12"]);
}

function informer(kube: Pick<Kube, "list" | "watch">, shards = [A, B, REST], streamingList = true) {
  const inf = new Informer<Obj>(kube, {
    path: "/x",
    logger: silent,
    labelSelector: USER,
    streamingList,
    shards,
  });
  const events: string[] = [];
  inf.on((e, o) => events.push(`${e} ${o.metadata.name}@${o.metadata.resourceVersion}`));
  return { inf, events };
}

const names = (inf: Informer<Obj>) =>
  inf
    .list()
    .map((o) => `${o.metadata.name}@${o.metadata.resourceVersion}`)
    .sort();

test("shards are streamed at once; the watch after them starts from the oldest and skips what they read", async () => {
  const { kube, requests } = byShard({
    [`${USER},${A}`]: [[added("a", "5"), listEnd("10")]],
    [`${USER},${B}`]: [[added("b", "11"), added("c", "12"), listEnd("12")]],
    [`${USER},${REST}`]: [[added("new", "3"), listEnd("10")]],
    [USER]: [REPLAY, "hang"],
  });
  const { inf, events } = informer(kube);
  inf.start();
  await inf.waitForSync();
  await until("the watch's events", () => events.includes("delete new@14"));
  await inf.stop();
  const watches = requests.filter((r) => r.verb === "watch");
  assert.deepEqual(
    watches.slice(0, 3).map((r) => [r.query.labelSelector, r.query.sendInitialEvents]),
    [
      [`${USER},${A}`, "true"],
      [`${USER},${B}`, "true"],
      [`${USER},${REST}`, "true"],
    ],
  );
  assert.deepEqual(
    [watches[3]!.query.labelSelector, watches[3]!.query.resourceVersion],
    [USER, "10"],
  );
  assert.equal(watches[3]!.query.sendInitialEvents, undefined);
  assertJoined(events, inf);
});

test("a server moved between shards while they were listed is cached once, at its newest", async () => {
  // x's shard label changed at 11: shard A read it before (then saw it leave), shard B after.
  const leaves = [added("x", "5"), deleted("x", "11"), listEnd("12")];
  const enters = [added("x", "11"), listEnd("12")];
  for (const [order, expected] of [
    // A's stream first: a delete, then B's add (as two watches may interleave).
    [
      [A, B],
      ["add x@5", "delete x@11", "add x@11"],
    ],
    // B's first: A's older copy and its leaving (same version as B's copy) are skipped.
    [[B, A], ["add x@11"]],
  ] as const) {
    const { kube } = byShard({
      [`${USER},${A}`]: [leaves],
      [`${USER},${B}`]: [enters],
      [`${USER},${REST}`]: [[listEnd("12")]],
      [USER]: [[modified("x", "11")], "hang"],
    });
    await assertCachedOnce(kube, order, true, expected);
  }
});

/**
 * Lists the shards in `order` (then REST) and checks the events told and that x, whose shard
 * changed at 11, is cached once, at 11.
 */
async function assertCachedOnce(
  kube: Pick<Kube, "list" | "watch">,
  order: readonly string[],
  streamingList: boolean,
  expected: readonly string[],
) {
  const { inf, events } = informer(kube, [...order, REST], streamingList);
  inf.start();
  await inf.waitForSync();
  await until("the events", () => events.length >= expected.length);
  await inf.stop();
  assert.deepEqual(events, expected, `shards listed in order ${order.join(", ")}`);
  assert.deepEqual(names(inf), ["x@11"]);
}

// The operator lists its shards plainly (caches.ts): the same joins, from plain lists.

test("shards listed plainly: the watch after them starts from the oldest and skips what they read", async () => {
  const { kube, requests } = byShard(
    { [USER]: [REPLAY, "hang"] },
    {
      [`${USER},${A}`]: [{ items: [obj("a", "5")], rv: "10" }],
      [`${USER},${B}`]: [{ items: [obj("b", "11"), obj("c", "12")], rv: "12" }],
      [`${USER},${REST}`]: [{ items: [obj("new", "3")], rv: "10" }],
    },
  );
  const { inf, events } = informer(kube, [A, B, REST], false);
  inf.start();
  await inf.waitForSync();
  await until("the watch's events", () => events.includes("delete new@14"));
  await inf.stop();
  assert.deepEqual(
    requests.map((r) => [r.verb, r.query.labelSelector, r.query.resourceVersion]),
    [
      ["list", `${USER},${A}`, "0"],
      ["list", `${USER},${B}`, "0"],
      ["list", `${USER},${REST}`, "0"],
      ["watch", USER, "10"],
      ["watch", USER, "14"], // the scripted watch ended: again from where it was
    ],
  );
  assertJoined(events, inf);
});

test("shards in flight are bounded: the next is asked as one ends, and a failure asks no more", async () => {
  const C = "shard in (c)";
  const D = "shard in (d)";
  const lists: Record<string, ListStep> = {
    [`${USER},${A}`]: { items: [obj("a", "5")], rv: "10" },
    [`${USER},${B}`]: { items: [obj("b", "6")], rv: "11" },
    [`${USER},${C}`]: { items: [obj("c", "7")], rv: "12" },
    [`${USER},${D}`]: { items: [obj("d", "8")], rv: "13" },
    [`${USER},${REST}`]: { items: [], rv: "9" },
  };
  // Lists that end on a later turn of the event loop, counting how many are open at once.
  let open = 0;
  let most = 0;
  const asked: string[] = [];
  const base = byShard({ [USER]: ["hang"] }, {});
  const kube: Pick<Kube, "list" | "watch"> = {
    watch: base.kube.watch,
    list: async <T>(_p: string, query: Record<string, string>, onItem: (item: T) => void) => {
      const selector = query.labelSelector ?? "";
      asked.push(selector);
      most = Math.max(most, ++open);
      await new Promise((r) => setTimeout(r, 5));
      open--;
      const step = lists[selector]!;
      if ("fail" in step) throw step.fail;
      for (const o of step.items) onItem(structuredClone(o) as T);
      return { resourceVersion: step.rv };
    },
  };
  const bounded = () =>
    new Informer<Obj>(kube, {
      path: "/x",
      logger: silent,
      labelSelector: USER,
      shards: [A, B, C, D, REST],
      shardsInFlight: 2,
    });
  const inf = bounded();
  inf.start();
  await inf.waitForSync();
  await inf.stop();
  assert.equal(most, 2);
  assert.deepEqual(
    asked,
    [A, B, C, D, REST].map((s) => `${USER},${s}`),
  );
  assert.deepEqual(names(inf), ["a@5", "b@6", "c@7", "d@8"]);

  // B fails while A's end has let C go: D and the rest are not asked in that attempt (the
  // informer's retry, later, starts again from A).
  lists[`${USER},${B}`] = { fail: new KubeError(500, "InternalError", "boom", "GET", "/x") };
  asked.length = 0;
  const failing = bounded();
  failing.start();
  await until("B's failure", () => asked.length >= 3);
  await new Promise((r) => setTimeout(r, 50));
  await failing.stop();
  const retry = asked.indexOf(`${USER},${A}`, 1);
  const attempt = retry < 0 ? asked : asked.slice(0, retry);
  assert.deepEqual(
    attempt,
    [A, B, C].map((s) => `${USER},${s}`),
  );
});

test("a server moved between shards listed plainly is cached once, at its newest", async () => {
  // x's shard label changed at 11: shard A's list (at 10) still has it, shard B's (at 12) too.
  for (const [order, expected] of [
    [
      [A, B],
      ["add x@5", "update x@11"],
    ],
    // B's first: A's older copy is skipped.
    [[B, A], ["add x@11"]],
  ] as const) {
    const { kube } = byShard(
      { [USER]: [[modified("x", "11")], "hang"] },
      {
        [`${USER},${A}`]: [{ items: [obj("x", "5")], rv: "10" }],
        [`${USER},${B}`]: [{ items: [obj("x", "11")], rv: "12" }],
        [`${USER},${REST}`]: [{ items: [], rv: "12" }],
      },
    );
    await assertCachedOnce(kube, order, false, expected);
  }
});

test("a relist in shards drops what no shard has any more, and keeps what one has unchanged", async () => {
  const { kube, requests } = byShard({
    [`${USER},${A}`]: [
      [added("a", "5"), added("gone", "6"), listEnd("10")],
      [added("a", "5"), listEnd("30")],
    ],
    [`${USER},${B}`]: [
      [added("b", "7"), listEnd("10")],
      [added("b", "25"), listEnd("31")],
    ],
    [`${USER},${REST}`]: [[listEnd("10")], [listEnd("30")]],
    [USER]: [[{ type: "ERROR", object: { code: 410, message: "too old" } as unknown as Obj }]],
  });
  const { inf, events } = informer(kube);
  inf.start();
  await until("the relist", () => events.includes("delete gone@6"));
  await inf.stop();
  assert.deepEqual(events.slice(3), ["update b@25", "delete gone@6"]);
  assert.deepEqual(names(inf), ["a@5", "b@25"]);
  // The relist asks for no older than what the cache had seen.
  const relist = requests.filter((r) => r.verb === "watch" && r.query.sendInitialEvents);
  assert.deepEqual(
    relist.slice(3).map((r) => r.query.resourceVersion),
    ["10", "10", "10"],
  );
});

test("shards a server cannot stream are listed plainly, each with its selector", async () => {
  const refused = { fail: new KubeError(400, "BadRequest", "no watch-list", "WATCH", "/x") };
  const { kube, requests } = byShard(
    { [`${USER},${A}`]: [refused], [`${USER},${B}`]: [refused], [`${USER},${REST}`]: [refused] },
    {
      [`${USER},${A}`]: [{ items: [obj("a", "5")], rv: "9" }],
      [`${USER},${B}`]: [{ items: [obj("b", "8")], rv: "9" }],
      [`${USER},${REST}`]: [{ items: [], rv: "9" }],
    },
  );
  const { inf } = informer(kube);
  inf.start();
  await inf.waitForSync();
  await until("the watch", () => requests.some((r) => r.query.labelSelector === USER));
  await inf.stop();
  const lists = requests.filter((r) => r.verb === "list");
  assert.deepEqual(
    lists.map((r) => [r.query.labelSelector, r.query.resourceVersion]),
    [
      [`${USER},${A}`, "0"],
      [`${USER},${B}`, "0"],
      [`${USER},${REST}`, "0"],
    ],
  );
  assert.deepEqual(names(inf), ["a@5", "b@8"]);
});

test("versions that are not numbers cannot be ordered: one list is read instead", async () => {
  const { kube, requests } = byShard({
    [`${USER},${A}`]: [[added("a", "x5"), listEnd("x10")]],
    [`${USER},${B}`]: [[listEnd("x11")]],
    [`${USER},${REST}`]: [[listEnd("x11")]],
    [USER]: [[added("a", "x5"), added("b", "x7"), listEnd("x12"), modified("b", "x13")], "hang"],
  });
  const { inf, events } = informer(kube);
  inf.start();
  await inf.waitForSync();
  await until("the watch goes on", () => events.includes("update b@x13"));
  await inf.stop();
  const whole = requests.filter((r) => r.query.labelSelector === USER);
  assert.equal(whole[0]!.query.sendInitialEvents, "true");
  assert.deepEqual(names(inf), ["a@x5", "b@x13"]);
});

test("resourceVersions are ordered as numbers; anything else is not ordered", () => {
  assert.equal(compareVersions("9", "10")! < 0, true);
  assert.equal(compareVersions("10", "9")! > 0, true);
  assert.equal(compareVersions("12", "12"), 0);
  assert.equal(compareVersions("12", "x"), undefined);
  assert.equal(compareVersions(undefined, "1"), undefined);
});

test("the shard selectors select every label value once, and unlabelled servers by the first", () => {
  const selectors = listShardSelectors(2);
  assert.deepEqual(selectors, [
    `${LIST_SHARD_LABEL} notin (0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15)`,
    `${LIST_SHARD_LABEL} in (0,2,4,6,8,10,12,14)`,
    `${LIST_SHARD_LABEL} in (1,3,5,7,9,11,13,15)`,
  ]);
  // Names spread over the shards, each to one of 0..15, and always the same one.
  const counts = new Map<string, number>();
  for (let i = 0; i < 1600; i++) {
    const s = listShardOf(`web-prod-${i}`);
    assert.equal(listShardOf(`web-prod-${i}`), s);
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  assert.deepEqual(
    [...counts.keys()].sort((a, b) => Number(a) - Number(b)),
    [...Array.from({ length: 16 }, (_, i) => String(i))],
  );
  for (const n of counts.values())
    assert.ok(n > 50 && n < 150, `shard sizes ${[...counts.values()]}`);
});

test("a list in shards after the server's versions went back (etcd restored) replaces the cache", async () => {
  const gone = {
    type: "ERROR",
    object: { code: 410, message: "too old" } as unknown as Obj,
  } as const;
  const { kube } = byShard({
    [`${USER},${A}`]: [
      [added("a", "50"), listEnd("60")],
      [added("a", "20"), listEnd("30")],
    ],
    [`${USER},${B}`]: [[added("b", "55"), listEnd("60")], [listEnd("30")]],
    [`${USER},${REST}`]: [[listEnd("60")], [listEnd("30")]],
    [USER]: [[gone], [modified("a", "25")], "hang"],
  });
  const { inf, events } = informer(kube);
  inf.start();
  await until("the watch after the second list", () => events.includes("update a@25"));
  await inf.stop();
  assert.deepEqual(events, ["add a@50", "add b@55", "update a@20", "delete b@55", "update a@25"]);
  assert.deepEqual(names(inf), ["a@25"]);
});

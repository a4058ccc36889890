// The server index follows the informer's cache: lookups by hostname, address, class and group
// return what a scan of the cache would, after adds, edits that move a server between buckets,
// deletions and a relist that drops what is gone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { VirtualServer } from "../../src/api/types.js";
import { Informer, keyOf } from "../../src/controller/informer.js";
import type { Kube, WatchEvent } from "../../src/controller/kube.js";
import { ServerIndex } from "../../src/reconcile/engine/server-index.js";

const G = "provisioning.vsop.dev";
let rv = 0;

function server(name: string, hostname: string, className: string, address?: string) {
  const [apptype, rest] = hostname.split("-");
  return {
    metadata: {
      namespace: "ns",
      name,
      uid: `uid-${name}`,
      resourceVersion: String(++rv),
      labels: { [`${G}/apptype`]: apptype!, [`${G}/environment`]: rest! },
    },
    spec: { hostname, className },
    ...(address ? { status: { address } } : {}),
  } as unknown as VirtualServer;
}

/** An API server in memory: a list, then watch events pushed by the test. */
class FakeKube {
  items: VirtualServer[] = [];
  private push?: (e: WatchEvent<VirtualServer>) => void;
  lists = 0;

  list<T>(_p: string, _q: Record<string, string>, onItem: (item: T) => void) {
    this.lists++;
    for (const vs of this.items) onItem(structuredClone(vs) as T);
    return Promise.resolve({ resourceVersion: String(rv) });
  }

  watch<T>(
    _p: string,
    _q: Record<string, string>,
    onEvent: (e: WatchEvent<T>) => void,
    signal: AbortSignal,
  ) {
    return new Promise<void>((resolve, reject) => {
      this.push = (e) => {
        try {
          onEvent(e as WatchEvent<T>);
        } catch (err) {
          reject(err as Error); // as the real watch does: the informer decides what next
        }
      };
      signal.addEventListener("abort", () => resolve());
    });
  }

  event(type: "ADDED" | "MODIFIED" | "DELETED", vs: VirtualServer) {
    this.push!({ type, object: structuredClone(vs) });
  }

  /** The watch ends with 410 Gone: the informer lists again. */
  gone() {
    this.push!({ type: "ERROR", object: { code: 410, message: "gone" } as never });
  }

  async watching() {
    while (!this.push) await new Promise((r) => setTimeout(r, 1));
  }
}

const names = (list: VirtualServer[]) => list.map(keyOf).sort();

test("lookups follow adds, edits, deletions and a relist", async () => {
  const kube = new FakeKube();
  kube.items = [
    server("a", "web-prod-1.example.test", "small", "10.0.0.1"),
    server("b", "web-prod-2.example.test", "small"),
    server("c", "db-prod-1.example.test", "large", "10.0.0.3"),
  ];
  const informer = new Informer<VirtualServer>(kube as unknown as Kube, {
    path: "/x",
    logger: pino({ level: "silent" }),
  });
  informer.start();
  await informer.waitForSync();
  await kube.watching();
  const index = new ServerIndex(informer); // after sync: told the cached objects as adds

  assert.deepEqual(names(index.withHostname("web-prod-1.example.test")), ["ns/a"]);
  assert.deepEqual(names(index.withAddress("10.0.0.3")), ["ns/c"]);
  assert.deepEqual(names(index.ofClass("small")), ["ns/a", "ns/b"]);
  assert.deepEqual(names(index.inGroup("web", "prod")), ["ns/a", "ns/b"]);
  assert.deepEqual(index.withHostname("nope.example.test"), []);

  // b takes a's hostname and an address; c moves class; a new server joins the web group.
  const b = server("b", "web-prod-1.example.test", "small", "10.0.0.2");
  const c = server("c", "db-prod-1.example.test", "small", "10.0.0.3");
  const d = server("d", "web-prod-3.example.test", "large");
  kube.event("MODIFIED", b);
  kube.event("MODIFIED", c);
  kube.event("ADDED", d);
  assert.deepEqual(names(index.withHostname("web-prod-1.example.test")), ["ns/a", "ns/b"]);
  assert.deepEqual(index.withHostname("web-prod-2.example.test"), [], "b's old hostname");
  assert.deepEqual(names(index.withAddress("10.0.0.2")), ["ns/b"]);
  assert.deepEqual(names(index.ofClass("large")), ["ns/d"]);
  assert.deepEqual(names(index.ofClass("small")), ["ns/a", "ns/b", "ns/c"]);
  assert.deepEqual(names(index.inGroup("web", "prod")), ["ns/a", "ns/b", "ns/d"]);
  assert.equal(
    index.withAddress("10.0.0.2")[0]!.metadata.resourceVersion,
    b.metadata.resourceVersion,
    "the bucket holds the newest object",
  );

  kube.event("DELETED", b);
  assert.deepEqual(names(index.withHostname("web-prod-1.example.test")), ["ns/a"]);
  assert.deepEqual(index.withAddress("10.0.0.2"), []);
  // A deletion whose object differs from the one cached (it changed in between, or left a
  // label-selected watch): the server leaves the buckets it was filed in.
  kube.event("ADDED", server("e", "mail-prod-1.example.test", "small"));
  kube.event("DELETED", server("e", "mail-prod-2.example.test", "large"));
  assert.deepEqual(index.inGroup("mail", "prod"), []);
  kube.event("ADDED", server("e", "mail-test-1.example.test", "large")); // the name again
  assert.deepEqual(names(index.ofClass("small")), ["ns/a", "ns/c"]);
  assert.deepEqual(names(index.ofClass("large")), ["ns/d", "ns/e"]);
  assert.deepEqual(index.inGroup("mail", "prod"), []);

  // While the watch was down, a was deleted and d changed hostname: the relist tells both.
  kube.items = [c, server("d", "app-test-1.example.test", "large")];
  kube.gone();
  while (kube.lists < 2) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(index.withHostname("web-prod-1.example.test"), []);
  assert.deepEqual(index.inGroup("web", "prod"), []);
  assert.deepEqual(names(index.inGroup("app", "test")), ["ns/d"]);
  assert.deepEqual(names(index.ofClass("small")), ["ns/c"]);
  await informer.stop();
});

test("a fixed set: the same answers as a scan", () => {
  const all = [
    server("a", "web-prod-1.example.test", "small", "10.0.0.1"),
    server("b", "web-prod-1.example.test", "large", "10.0.0.1"),
    server("c", "web-test-1.example.test", "small"),
  ];
  const index = ServerIndex.of(all);
  for (const vs of all) {
    const h = vs.spec.hostname;
    assert.deepEqual(names(index.withHostname(h)), names(all.filter((o) => o.spec.hostname === h)));
    assert.deepEqual(
      names(index.ofClass(vs.spec.className)),
      names(all.filter((o) => o.spec.className === vs.spec.className)),
    );
  }
  assert.deepEqual(names(index.withAddress("10.0.0.1")), ["ns/a", "ns/b"]);
  assert.deepEqual(names(index.inGroup("web", "test")), ["ns/c"]);
});

// The event recorder queues and writes in the background: a reconcile never waits for it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { EventRecorder } from "../../src/controller/events.js";
import type { Kube } from "../../src/controller/kube.js";

/** A Kube whose creates wait until released, counting how many are in flight at once. */
function gatedKube() {
  const written: { reason: string; message: string }[] = [];
  const gates: (() => void)[] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  const kube = {
    create: async (_path: string, body: { reason: string; message: string }) => {
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await new Promise<void>((resolve) => gates.push(resolve));
      inFlight--;
      written.push({ reason: body.reason, message: body.message });
      return body;
    },
  } as unknown as Kube;
  const releaseAll = async () => {
    while (gates.length) {
      for (const g of gates.splice(0)) g();
      await new Promise((r) => setImmediate(r));
    }
  };
  return { kube, written, releaseAll, mostInFlight: () => mostInFlight };
}

const server = (uid: string) => ({
  apiVersion: "vsop.dev/v1alpha1",
  kind: "VirtualServer",
  metadata: { name: `vs-${uid}`, namespace: "ns", uid },
});

test("record returns before the API server answers; two writes at a time; flush waits for all", async () => {
  const k = gatedKube();
  const rec = new EventRecorder(k.kube, pino({ level: "silent" }), "test");
  for (const uid of ["a", "b", "c", "d", "e"]) rec.record(server(uid), "Normal", "Created", uid);
  assert.equal(k.written.length, 0);
  assert.equal(k.mostInFlight(), 2);
  let flushed = false;
  const flush = rec.flush(5000).then(() => (flushed = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(flushed, false, "flush resolved while events were waiting");
  await k.releaseAll();
  await flush;
  assert.deepEqual(
    k.written.map((e) => e.message),
    ["a", "b", "c", "d", "e"],
  );
  assert.equal(k.mostInFlight(), 2);
});

test("beyond the queue's bound new events are dropped and counted; a repeat within a minute is not queued", async () => {
  const k = gatedKube();
  let dropped = 0;
  const rec = new EventRecorder(k.kube, pino({ level: "silent" }), "test", {
    maxPending: 2,
    writers: 1,
    onDrop: () => dropped++,
  });
  rec.record(server("a"), "Normal", "Created", "one"); // written at once
  rec.record(server("a"), "Normal", "Created", "one"); // a repeat: not queued, not dropped
  rec.record(server("b"), "Normal", "Created", "two");
  rec.record(server("c"), "Normal", "Created", "three");
  rec.record(server("d"), "Warning", "Failed", "four"); // the queue holds two: dropped
  assert.equal(dropped, 1);
  await k.releaseAll();
  await rec.flush(5000);
  assert.deepEqual(
    k.written.map((e) => e.message),
    ["one", "two", "three"],
  );
});

test("a write that fails is logged once and the events after it are still written", async () => {
  const lines: string[] = [];
  let calls = 0;
  const kube = {
    create: async (_path: string, body: { message: string }) => {
      if (calls++ === 0) throw new Error("boom");
      return body;
    },
  } as unknown as Kube;
  const rec = new EventRecorder(
    kube,
    pino({ level: "warn" }, { write: (s: string) => void lines.push(s) }),
    "test",
  );
  rec.record(server("a"), "Normal", "Created", "first");
  rec.record(server("b"), "Normal", "Created", "second");
  await rec.flush(5000);
  assert.equal(calls, 2);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /could not record event/);
});

// The task watch against a scripted session: which tasks each read asks for, who is woken, and
// when the reads stop. (test/e2e/vsphere.test.ts runs it against vcsim.)
import test from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { TaskWatch } from "../../src/vsphere/task-watch.js";
import { VSphereFault } from "../../src/vsphere/errors.js";
import { MoRef, type Node } from "../../src/vsphere/xml.js";
import type { VSphereSession } from "../../src/vsphere/session.js";

/** A session whose RetrievePropertiesEx answers each task's state from `states`. */
function taskSession(states: Map<string, string>) {
  const reads: string[][] = [];
  const session = {
    serviceContent: () =>
      Promise.resolve({ propertyCollector: new MoRef("PropertyCollector", "propertyCollector") }),
    invoke: (_method: string, _pc: MoRef, args: { specSet: { objectSet: { obj: MoRef }[] } }) => {
      const asked = args.specSet.objectSet.map((o) => o.obj.value);
      reads.push(asked);
      if (asked.some((t) => !states.has(t)))
        return Promise.reject(
          new VSphereFault("ManagedObjectNotFound", "RetrievePropertiesEx", ""),
        );
      const objects = asked.map((t) => ({
        obj: new MoRef("Task", t),
        propSet: [{ name: "info.state", val: states.get(t)! }],
      }));
      return Promise.resolve({ objects } as Node);
    },
  };
  return { session: session as unknown as VSphereSession, reads };
}

const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));

/** `held`: the first read answers only once it resolves. */
function watchOf(
  states: Map<string, string>,
  inFlight: Map<string, { moRef: string }>,
  held?: Promise<void>,
) {
  const woken: string[] = [];
  const { session, reads } = taskSession(states);
  if (held) {
    const s = session as unknown as { invoke: (...a: unknown[]) => Promise<Node> };
    const invoke = s.invoke;
    let first = true;
    s.invoke = async (...args) => {
      const answer = invoke(...args);
      if (first) {
        first = false;
        await held;
      }
      return answer;
    };
  }
  const watch = new TaskWatch(
    session,
    () => inFlight,
    (key) => void woken.push(key),
    pino({ level: "silent" }),
    10,
  );
  return { watch, woken, reads };
}

test("an ended task wakes its owner once; a running one is read until it ends; reads stop", async () => {
  const states = new Map([
    ["task-1", "running"],
    ["task-2", "success"],
  ]);
  const inFlight = new Map([
    ["ns/a", { moRef: "task-1" }],
    ["ns/b", { moRef: "task-2" }],
  ]);
  const { watch, woken, reads } = watchOf(states, inFlight);
  watch.watch("task-1");
  watch.watch("task-2");
  await tick();
  assert.deepEqual(woken, ["ns/b"]);
  // What the last read found stands for a running task's state, while it is fresh.
  assert.equal(watch.runningAsOf("task-1", 1000), true);
  assert.equal(watch.runningAsOf("task-2", 1000), false, "it ended: its owner reads it");
  assert.equal(watch.runningAsOf("task-1", -1), false, "too old to stand for it");
  states.set("task-1", "error");
  await tick();
  assert.deepEqual(woken, ["ns/b", "ns/a"]);
  assert.equal(watch.runningAsOf("task-1", 1000), false);
  const after = reads.length;
  await tick();
  assert.equal(reads.length, after, "read again after every task had woken its owner");
  // The owner saw task-1 still running after all (it re-tracks it): it is read again.
  states.set("task-1", "running");
  watch.watch("task-1");
  await tick();
  assert.ok(reads.length > after);
  assert.deepEqual(reads.at(-1), ["task-1"]);
  watch.stop();
});

test("a task vCenter does not know wakes every owner in that read, whose own reads tell which", async () => {
  const states = new Map([["task-1", "running"]]);
  const inFlight = new Map([
    ["ns/a", { moRef: "task-1" }],
    ["ns/gone", { moRef: "task-9" }],
  ]);
  const { watch, woken } = watchOf(states, inFlight);
  watch.watch("task-1");
  await tick();
  assert.deepEqual(woken.sort(), ["ns/a", "ns/gone"]);
  watch.stop();
});

test("with more tasks in flight than one read takes, the reads take turns", async () => {
  const states = new Map<string, string>();
  const inFlight = new Map<string, { moRef: string }>();
  for (let i = 0; i < 600; i++) {
    states.set(`task-${i}`, "running");
    inFlight.set(`ns/s${i}`, { moRef: `task-${i}` });
  }
  const { watch, reads } = watchOf(states, inFlight);
  watch.watch("task-0");
  // Three reads 10 ms apart; on a busy machine they can take longer than that.
  for (let waited = 0; reads.length < 3 && waited < 3000; waited += 30) await tick();
  watch.stop();
  assert.ok(reads.length >= 3, `${reads.length} reads`);
  assert.equal(reads[0]!.length, 500);
  assert.deepEqual(
    reads[1],
    [...Array(100).keys()].map((i) => `task-${500 + i}`),
  );
  assert.equal(reads[2]![0], "task-0");
});

test("a task tracked while a read is out is read next, though every task read was done", async () => {
  const states = new Map([
    ["task-1", "success"],
    ["task-2", "running"],
  ]);
  const inFlight = new Map([["ns/a", { moRef: "task-1" }]]);
  // The first read is held until the test lets it answer.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const { watch, woken, reads } = watchOf(states, inFlight, held);
  watch.watch("task-1");
  await tick(); // the read of task-1 is out
  assert.deepEqual(reads, [["task-1"]]);
  inFlight.set("ns/b", { moRef: "task-2" }); // another owner starts a task meanwhile
  watch.watch("task-2");
  release();
  await tick();
  assert.deepEqual(woken, ["ns/a"]);
  assert.deepEqual(reads.at(-1), ["task-2"], "the new task is read without another start");
  states.set("task-2", "success");
  await tick();
  assert.deepEqual(woken, ["ns/a", "ns/b"]);
  watch.stop();
});

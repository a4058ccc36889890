import { test } from "node:test";
import assert from "node:assert/strict";
import { currentSignal, runWithSignal } from "../../src/abort.js";
import { PendingCalls } from "../../src/reconcile/engine/pending-calls.js";

/** A promise settled from outside. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets settled promises run their callbacks. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A table over a settable clock, recording the keys it wakes. */
function table(options: { maxEntries?: number; ttlMs?: number } = {}) {
  const woken: string[] = [];
  const clock = { now: 1_000_000 };
  const calls = new PendingCalls({ wake: (k) => woken.push(k), now: () => clock.now, ...options });
  return { calls, woken, clock };
}

test("start does not wait; the settled value wakes the key once and is taken once", async () => {
  const { calls, woken } = table();
  const d = deferred<number>();
  assert.equal(
    calls.start("ns/a", "x", () => d.promise),
    true,
  );
  assert.equal(calls.take("ns/a", "x").state, "pending");
  assert.deepEqual(woken, []);
  d.resolve(42);
  await flush();
  assert.deepEqual(woken, ["ns/a"]);
  assert.deepEqual(calls.take("ns/a", "x"), { state: "settled", ok: true, value: 42 });
  assert.deepEqual(calls.take("ns/a", "x"), { state: "none" });
  assert.equal(calls.size, 0);
});

test("an error is kept as the outcome, with the count of consecutive failures", async () => {
  const { calls, woken } = table();
  const boom = new Error("timeout");
  for (const n of [1, 2, 3]) {
    calls.start("ns/a", "x", () => Promise.reject(boom));
    await flush();
    assert.deepEqual(calls.take("ns/a", "x"), {
      state: "settled",
      ok: false,
      error: boom,
      failures: n,
    });
  }
  assert.equal(woken.length, 3);
  // A success ends the streak; the next failure counts from 1 again.
  calls.start("ns/a", "x", async () => "ok");
  await flush();
  assert.equal(calls.take("ns/a", "x").state, "settled");
  calls.start("ns/a", "x", () => Promise.reject(boom));
  await flush();
  assert.equal((calls.take("ns/a", "x") as { failures: number }).failures, 1);
  // Streaks are per call id and per key.
  calls.start("ns/a", "y", () => Promise.reject(boom));
  calls.start("ns/b", "x", () => Promise.reject(boom));
  await flush();
  assert.equal((calls.take("ns/a", "y") as { failures: number }).failures, 1);
  assert.equal((calls.take("ns/b", "x") as { failures: number }).failures, 1);
});

test("a call that throws synchronously is a failed call, not a crash", async () => {
  const { calls, woken } = table();
  assert.equal(
    calls.start("ns/a", "x", () => {
      throw new Error("sync");
    }),
    true,
  );
  await flush();
  const r = calls.take("ns/a", "x");
  assert.equal(r.state === "settled" && !r.ok && (r.error as Error).message, "sync");
  assert.deepEqual(woken, ["ns/a"]);
});

test("a second start while one is in flight or not taken starts nothing", async () => {
  const { calls } = table();
  let started = 0;
  const d = deferred<string>();
  const call = () => {
    started++;
    return d.promise;
  };
  calls.start("ns/a", "x", call);
  calls.start("ns/a", "x", call);
  assert.equal(started, 1);
  d.resolve("first");
  await flush();
  calls.start("ns/a", "x", call);
  assert.equal(started, 1, "the settled outcome waits to be taken");
  assert.deepEqual(calls.take("ns/a", "x"), { state: "settled", ok: true, value: "first" });
});

test("the call runs outside the reconcile's abort scope", async () => {
  const { calls } = table();
  let seen: AbortSignal | undefined = new AbortController().signal;
  await runWithSignal(new AbortController().signal, async () => {
    calls.start("ns/a", "x", async () => {
      seen = currentSignal();
    });
  });
  await flush();
  assert.equal(seen, undefined);
});

test("bounded: a full table refuses new calls until outcomes are taken or expire", async () => {
  const { calls, clock } = table({ maxEntries: 2, ttlMs: 60_000 });
  calls.start("ns/a", "x", async () => 1);
  calls.start("ns/b", "x", () => new Promise(() => undefined)); // never settles
  await flush();
  assert.equal(
    calls.start("ns/c", "x", async () => 3),
    false,
  );
  assert.equal(calls.take("ns/c", "x").state, "none");
  calls.take("ns/a", "x");
  assert.equal(
    calls.start("ns/c", "x", async () => 3),
    true,
  );
  await flush();
  assert.equal(
    calls.start("ns/d", "x", async () => 4),
    false,
  );
  // Past the TTL both the outcome nobody took and the call that never settled are dropped.
  clock.now += 60_001;
  assert.equal(
    calls.start("ns/d", "x", async () => 4),
    true,
  );
  assert.equal(calls.size, 1);
  assert.equal(calls.take("ns/b", "x").state, "none");
  assert.equal(calls.take("ns/c", "x").state, "none");
});

test("an outcome not taken within the TTL is gone; a late settle of a dropped call is ignored", async () => {
  const { calls, clock, woken } = table({ ttlMs: 1000 });
  calls.start("ns/a", "x", async () => "v");
  await flush();
  clock.now += 1001;
  assert.equal(calls.take("ns/a", "x").state, "none");
  const d = deferred<string>();
  calls.start("ns/a", "y", () => d.promise);
  clock.now += 1001;
  assert.equal(calls.take("ns/a", "y").state, "none", "running past the TTL: dropped");
  d.resolve("late");
  await flush();
  assert.equal(calls.take("ns/a", "y").state, "none");
  assert.deepEqual(woken, ["ns/a"], "only the first call woke the key");
});

test("forget drops a deleted object's calls and streaks; their outcomes wake nobody", async () => {
  const { calls, woken } = table();
  calls.start("ns/a", "x", () => Promise.reject(new Error("1")));
  await flush();
  calls.take("ns/a", "x");
  const d = deferred<string>();
  calls.start("ns/a", "x", () => d.promise);
  calls.start("ns/b", "x", () => new Promise(() => undefined));
  woken.length = 0;
  calls.forget("ns/a");
  assert.equal(calls.size, 1);
  d.reject(new Error("2"));
  await flush();
  assert.deepEqual(woken, []);
  assert.equal(calls.take("ns/a", "x").state, "none");
  calls.start("ns/a", "x", () => Promise.reject(new Error("3")));
  await flush();
  assert.equal(
    (calls.take("ns/a", "x") as { failures: number }).failures,
    1,
    "the streak restarts",
  );
});

test("stop forgets everything and starts nothing more", async () => {
  const { calls, woken } = table();
  const d = deferred<string>();
  calls.start("ns/a", "x", () => d.promise);
  calls.stop();
  d.resolve("v");
  await flush();
  assert.deepEqual(woken, []);
  assert.equal(calls.size, 0);
  let ran = false;
  assert.equal(
    calls.start("ns/a", "x", async () => {
      ran = true;
    }),
    false,
  );
  assert.equal(ran, false);
});

test("failed calls are retried at the operator's backoff: base doubling up to its max", () => {
  const byDefault = new PendingCalls({ wake: () => undefined });
  assert.deepEqual(
    [1, 2, 3, 4, 20].map((n) => byDefault.retryAfterSeconds(n)),
    [1, 2, 4, 8, 300],
  );
  // --backoff-base 500ms --backoff-max 4s, as the e2e operators run
  const flags = new PendingCalls({ wake: () => undefined, backoff: { baseMs: 500, maxMs: 4000 } });
  assert.deepEqual(
    [1, 2, 3, 4, 5, 9].map((n) => flags.retryAfterSeconds(n)),
    [0.5, 1, 2, 4, 4, 4],
  );
});

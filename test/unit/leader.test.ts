import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { LeaderElector } from "../../src/controller/leader.js";
import { KubeError, type Kube } from "../../src/controller/kube.js";

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion: string };
  spec: Record<string, unknown>;
}

/**
 * An API server holding one Lease. `hang` makes every request wait until its own timeout (as
 * axios does with a stopped server), so the elector's per-attempt deadline is what ends it.
 */
function fakeKube(lease?: Lease) {
  const state = { lease, hang: false, rv: 1 };
  const kube = {
    async request(method: string, _path: string, body?: Lease, config?: { timeout?: number }) {
      if (state.hang) {
        await new Promise((r) => setTimeout(r, config?.timeout ?? 60_000));
        throw new Error(`timeout of ${config?.timeout}ms exceeded`);
      }
      if (method === "GET") {
        if (!state.lease) throw new KubeError(404, "NotFound", "", method, _path);
        return structuredClone(state.lease);
      }
      const next = structuredClone(body!);
      next.metadata = { ...next.metadata, resourceVersion: String(++state.rv) };
      state.lease = next;
      return next;
    },
  };
  return { kube: kube as unknown as Kube, state };
}

const log = pino({ level: "silent" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a holder that keeps renewing keeps the lease, however far its clock is behind ours", async () => {
  const { kube, state } = fakeKube({
    metadata: { name: "l", namespace: "n", resourceVersion: "1" },
    spec: {
      holderIdentity: "other",
      leaseDurationSeconds: 1,
      renewTime: "2020-01-01T00:00:00.000000Z",
    },
  });
  // The other replica renews every 300 ms, its renewTime always years in the past.
  const renewer = setInterval(() => {
    state.lease!.metadata.resourceVersion = String(++state.rv);
  }, 300);
  const me = new LeaderElector(kube, {
    namespace: "n",
    name: "l",
    leaseDurationSeconds: 1,
    logger: log,
    identity: "me",
  });
  let led = false;
  void me.acquire(() => undefined).then(() => (led = me.isLeader));
  await sleep(3000);
  assert.equal(led, false, "no second leader while the holder renews");
  clearInterval(renewer);
  const stoppedAt = Date.now();
  while (!me.isLeader && Date.now() - stoppedAt < 5000) await sleep(50);
  assert.ok(me.isLeader, "takes over once the holder stops");
  const took = Date.now() - stoppedAt;
  assert.ok(took >= 900 && took < 2500, `took over after ${took} ms (lease 1 s)`);
  assert.equal(state.lease!.spec.holderIdentity, "me");
  await me.release();
});

test("a leader whose renewals hang steps down within the renew deadline, not after them", async () => {
  const { kube, state } = fakeKube();
  const me = new LeaderElector(kube, {
    namespace: "n",
    name: "l",
    leaseDurationSeconds: 3,
    logger: log,
    identity: "me",
  });
  let lostAt = 0;
  await me.acquire(() => (lostAt = Date.now()));
  assert.ok(me.isLeader);
  const hangAt = Date.now();
  state.hang = true; // every request now waits out its timeout
  while (!lostAt && Date.now() - hangAt < 10_000) await sleep(50);
  assert.ok(lostAt, "leadership given up");
  // renew deadline = 2/3 of 3 s = 2 s after the last renewal; never a 30 s request timeout.
  assert.ok(lostAt - hangAt < 3000, `stepped down after ${lostAt - hangAt} ms`);
  assert.equal(me.isLeader, false);
});

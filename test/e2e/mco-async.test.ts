// Unreachable servers cost no worker time: with a single worker, six servers whose mcollectived
// never answers wait out their 10 s MCollective timeouts in the background, not in a reconcile,
// and a server beside them that answers converges as if they were not there.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  nodeDown,
  nodeUp,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const CLASS = "mco-async-assumed";
const LABELS = { "vsop-test": "mco-async" };
/** No mcollectived answers for these. */
const SILENT = [1, 2, 3, 4, 5, 6].map((i) => ({
  name: `quiet-${i}`,
  hostname: `quiet-prod-${i}.example.test`,
  address: `10.12.30.${30 + i}`,
}));
const LIVE = { name: "brisk", hostname: "brisk-prod-1.example.test", address: "10.12.30.37" };
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("mco-async");
  // An image that needs no install: the servers go straight to the Puppet step.
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  for (const s of [...SILENT, LIVE]) addDNS(s.address, s.hostname);
  nodeUp(LIVE.hostname);
  op = startOperator("mco-async", ["--label-selector", "vsop-test=mco-async", "--workers", "1"]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  nodeDown(LIVE.hostname);
});

/** The reconcile-time histogram: count, and how many took at most each bucket's bound. */
async function reconcileTimes(): Promise<{ count: number; buckets: [number, number][] }> {
  const { body } = await scrape(op.metricsPort);
  const buckets: [number, number][] = [];
  let count = 0;
  for (const line of body.split("\n")) {
    const bucket =
      /^controller_runtime_reconcile_time_seconds_bucket\{(?=[^}]*controller="virtualserver")[^}]*le="([^"]+)"[^}]*\} (\S+)$/.exec(
        line,
      );
    if (bucket) buckets.push([Number(bucket[1]), Number(bucket[2])]);
    const total =
      /^controller_runtime_reconcile_time_seconds_count\{controller="virtualserver"\} (\S+)$/.exec(
        line,
      );
    if (total) count = Number(total[1]);
  }
  return { count, buckets: buckets.sort((a, b) => a[0] - b[0]) };
}

/** Reconciles between two scrapes: how many, how many within `bound` s, and the smallest bucket
 * bound that holds them all (the longest one took at most that). */
function between(
  a: Awaited<ReturnType<typeof reconcileTimes>>,
  b: Awaited<ReturnType<typeof reconcileTimes>>,
  bound: number,
) {
  const at = (h: typeof a, le: number) => h.buckets.find(([l]) => l === le)?.[1] ?? 0;
  const count = b.count - a.count;
  const longest = b.buckets.find(([le]) => at(b, le) - at(a, le) === count)?.[0] ?? Infinity;
  return { count, within: at(b, bound) - at(a, bound), longest };
}

test("servers whose mcollectived never answers hold no worker; one that answers converges", async (t) => {
  const started = Date.now();
  for (const s of [...SILENT, LIVE]) apply(virtualServer(ns, s.name, s.hostname, CLASS, LABELS));
  // The answering server converges meanwhile, on the same single worker.
  const live = waitForCondition(ns, LIVE.name, "Ready", "True", undefined, 90_000).then(
    () => ({ seconds: (Date.now() - started) / 1000 }),
    (err: unknown) => ({ err }),
  );

  // Every silent server is at the Puppet step: its first runonce is in flight.
  await waitFor(
    "the silent servers at the Puppet step",
    () =>
      SILENT.every((s) =>
        ["PuppetRunning", "NodeNotReachable"].includes(
          cond(getVS(ns, s.name), "Ready")?.reason ?? "",
        ),
      ),
    120_000,
  );
  const first = await reconcileTimes();
  const atPuppet = Date.now();
  // Each one's runonce timed out (10 s) and was retried, all in the background.
  await waitFor(
    "every silent server NodeNotReachable",
    () => SILENT.every((s) => cond(getVS(ns, s.name), "Ready")?.reason === "NodeNotReachable"),
    90_000,
  );
  const wait = 25_000 - (Date.now() - atPuppet);
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const last = await reconcileTimes();
  const waited = between(first, last, 2);
  const ready = await live;
  t.diagnostic(
    `live server Ready ${"seconds" in ready ? `after ${ready.seconds.toFixed(1)} s` : "not within 90 s"}; ` +
      `${((Date.now() - atPuppet) / 1000).toFixed(0)} s with the silent servers at the Puppet ` +
      `step: ${waited.count} reconciles, ${waited.within} within 2 s, longest <= ${waited.longest} s; ` +
      `since start: ${last.count} reconciles, longest <= ${between({ count: 0, buckets: [] }, last, 2).longest} s`,
  );
  // Their reconciles ran while they waited (wakes, retries), and none took a timeout's time.
  assert.ok(waited.count >= SILENT.length * 2, `${waited.count} reconciles`);
  assert.equal(waited.within, waited.count, `longest reconcile <= ${waited.longest} s`);
  for (const s of SILENT) {
    const vs = getVS(ns, s.name);
    assert.equal(cond(vs, "PuppetApplied")?.status, "Unknown");
    assert.equal(vs?.status?.phase, "Waiting");
  }
  assert.ok("seconds" in ready, `the answering server: ${"err" in ready ? String(ready.err) : ""}`);
});

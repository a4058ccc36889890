// `npx tsx hack/bench-index.ts [N]`: CPU of one naming pass (the hostname and address uniqueness
// checks of every server) over N cached VirtualServers, looked up through the ServerIndex beside
// a scan of the whole cache (what each reconcile did before the index: O(N) each, O(N²) a pass).
// DNS answers at once from memory, so the figures are the lookups and the step's own work. It
// prints figures and asserts nothing; no stack needed.
import { pino } from "pino";
import type { VirtualServer, VirtualServerClass } from "../src/api/types.js";
import type { ReconcileContext } from "../src/reconcile/engine/context.js";
import { ServerIndex } from "../src/reconcile/engine/server-index.js";
import { namingStep, type NamingDeps } from "../src/reconcile/steps/naming-step.js";

const N = Number(process.argv[2] ?? 10_000);
const address = (i: number) => `10.${20 + Math.floor(i / 250)}.30.${(i % 250) + 2}`;
const servers = new Map<string, VirtualServer>();
for (let i = 0; i < N; i++)
  servers.set(`ns/s${i}`, {
    metadata: {
      namespace: "ns",
      name: `s${i}`,
      uid: `u${i}`,
      creationTimestamp: "2026-01-01T00:00:00Z",
    },
    spec: { hostname: `web-prod-${i}.example.test`, className: "c" },
    status: { address: address(i) },
  } as unknown as VirtualServer);
const cls = {
  metadata: { name: "c" },
  spec: { network: { vlanPortGroups: { "30": "VLAN-30" } }, naming: {} },
} as unknown as VirtualServerClass;
const lookup = () => async (name: string) => {
  const m = /^web-prod-(\d+)\./.exec(name);
  return [m ? address(Number(m[1])) : "10.20.30.254"];
};

/** The cache scanned on every lookup, as the informer's list() was. */
const scan: NamingDeps["servers"] = {
  withHostname: (h) => [...servers.values()].filter((o) => o.spec.hostname === h),
  withAddress: (a) => [...servers.values()].filter((o) => o.status?.address === a),
};

async function pass(label: string, deps: NamingDeps["servers"]): Promise<void> {
  const step = namingStep({ lookup, servers: deps });
  const log = pino({ level: "silent" });
  let failed = 0;
  const t0 = performance.now();
  for (const vs of servers.values()) {
    const ctx = { vs, cls, status: { ...vs.status }, log } as unknown as ReconcileContext;
    await step.run(ctx).catch(() => failed++);
  }
  const ms = performance.now() - t0;
  console.log(
    `  ${label.padEnd(22)} ${ms.toFixed(0).padStart(6)} ms a pass, ${((ms * 1000) / N).toFixed(1)} µs a server` +
      (failed ? ` (${failed} refused: not a fair run)` : ""),
  );
}

console.log(`naming pass over ${N} servers`);
const t0 = performance.now();
const index = ServerIndex.of([...servers.values()]);
console.log(`  index built in ${(performance.now() - t0).toFixed(0)} ms`);
for (let round = 1; round <= 2; round++) {
  await pass(`scan of the cache (${round})`, scan);
  await pass(`ServerIndex (${round})`, index);
}

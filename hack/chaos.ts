// `make chaos [N=20] [KILLS=30]`: N servers through the whole workflow while the leading operator
// is SIGKILLed KILLS times at aimed moments and vCenter, the API server, the broker and DNS go
// away in turn (test/support/chaos/campaign.ts); prints its figures, exits 1 when an invariant
// does not hold (test/support/chaos/report.ts), and leaves nothing behind.
import { runChaos } from "../test/support/chaos/campaign.js";
import { formatReport, violations } from "../test/support/chaos/report.js";

// make passes unset variables as empty strings.
const num = (name: string, fallback: number, min: number, max: number): number => {
  const raw = process.env[name] || undefined;
  const v = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(v) || v < min || v > max)
    throw new Error(`${name}=${raw}: a whole number from ${min} to ${max}`);
  return v;
};

const N = num("N", 20, 1, 200);
const KILLS = num("KILLS", 30, 0, 500);
const OUTAGE_SECONDS = num("OUTAGE_SECONDS", 30, 1, 600);

const log = (msg: string) =>
  console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${msg}`);

try {
  const report = await runChaos({
    servers: N,
    kills: KILLS,
    outageSeconds: OUTAGE_SECONDS,
    outageGapSeconds: 15,
    leaseSeconds: 8,
    createSpreadSeconds: Math.max(10, N * 6),
    recoverySeconds: 90,
    aimSeconds: 15,
    convergeTimeoutSeconds: 600,
    log,
  });
  console.log("");
  console.log(formatReport(report));
  const bad = violations(report);
  console.log("");
  if (bad.length) {
    console.log(`chaos: ${bad.length} invariant(s) violated:`);
    for (const b of bad) console.log(`  - ${b}`);
    process.exit(1);
  }
  console.log("chaos: every invariant held");
  process.exit(0);
} catch (err) {
  console.error(`chaos failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
}

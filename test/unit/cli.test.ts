import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { parseDuration, parseRunFlags, UsageError } from "../../src/cli/run-flags.js";

const main = new URL("../../dist/main.js", import.meta.url).pathname;

test("vsop --version prints the package version", () => {
  const out = execFileSync("node", [main, "--version"], { encoding: "utf8" });
  assert.match(out, /^vsop \d+\.\d+\.\d+\n$/);
});

test("vsop run --help lists the operator's flags", () => {
  const out = execFileSync("node", [main, "run", "--help"], { encoding: "utf8" });
  for (const flag of [
    "--kubeconfig",
    "--namespace",
    "--label-selector",
    "--workers",
    "--resync-period",
    "--log-level",
    "--log-format",
    "--metrics-bind-address",
    "--health-probe-bind-address",
  ])
    assert.ok(out.includes(flag), flag);
});

test("a bad flag value stops vsop run with exit code 2 and names the flag", () => {
  const r = spawnSync("node", [main, "run", "--workers", "zero"], { encoding: "utf8" });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--workers: "zero" is not a whole number/);
});

test("durations", () => {
  assert.equal(parseDuration("90", "x"), 90);
  assert.equal(parseDuration("10m", "x"), 600);
  assert.equal(parseDuration("1h", "x"), 3600);
  assert.equal(parseDuration("500ms", "x"), 0.5);
  assert.throws(() => parseDuration("soon", "x"), UsageError);
});

test("run flags: defaults and validation", () => {
  const c = parseRunFlags([]);
  assert.equal(c.workers, 8);
  assert.equal(c.namespace, "");
  assert.equal(c.logFormat, "json");
  assert.throws(() => parseRunFlags(["--log-format", "xml"]), /json, pretty/);
  assert.throws(() => parseRunFlags(["--no-such-flag"]), UsageError);
});

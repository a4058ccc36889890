// Runs last in `make test`: every log vsop wrote during the run (each test operator's, the
// demo's) is scanned for credentials. The vCenter password is the stack's own random one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { stackEnv } from "../support/env.js";
import { secretHits } from "../support/secret-scan.js";

test("no log vsop wrote in this run carries a credential", () => {
  const dir = path.join(stackEnv("VSOP_STACK_DIR"), "logs");
  const files = readdirSync(dir).filter((f) => /^(operator|demo).*\.log$/.test(f));
  assert.ok(files.length > 0, `operator logs in ${dir}`);
  let bytes = 0;
  for (const f of files) {
    const text = readFileSync(path.join(dir, f), "utf8");
    bytes += text.length;
    assert.deepEqual(secretHits(text, { "vCenter password": stackEnv("GOVC_PASSWORD") }), [], f);
  }
  console.log(`scanned ${files.length} vsop logs, ${bytes} bytes: no credential`);
});

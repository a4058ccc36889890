// Runs last in `make test`: every log vsop wrote during the run (each test operator's, the
// demo's) is scanned for credentials. The vCenter password and the Puppet master's autosign
// secret are the stack's own random ones.
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
  // The stack's own random secrets: the vCenter password, and the Puppet master's autosign secret.
  const known = {
    "vCenter password": stackEnv("GOVC_PASSWORD"),
    "Puppet autosign secret": readFileSync(stackEnv("VSOP_PUPPET_AUTOSIGN_SECRET"), "utf8").trim(),
  };
  let bytes = 0;
  for (const f of files) {
    const text = readFileSync(path.join(dir, f), "utf8");
    bytes += text.length;
    assert.deepEqual(secretHits(text, known), [], f);
  }
  console.log(`scanned ${files.length} vsop logs, ${bytes} bytes: no credential`);
});

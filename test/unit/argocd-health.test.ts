// The Argo CD health check of VirtualServers (deploy/argocd/), run with Debian's lua5.1 against
// every case of its health_test.yaml, the way Argo CD's own resource_customizations are tested.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import * as yaml from "js-yaml";
import { PROGRESS_REASONS, SUSPENDED_REASONS } from "../../src/reconcile/engine/virtualserver.js";

const root = new URL("../../", import.meta.url).pathname;
const checkDir = `${root}deploy/argocd/provisioning.vsop.dev/VirtualServer/`;
const healthLua = `${checkDir}health.lua`;
const driver = `${root}test/support/argocd-health.lua`;
const LUA = process.env.LUA ?? "/usr/bin/lua5.1";

interface HealthTest {
  healthStatus: { status: string; message: string };
  inputPath: string;
}

const cases = (
  yaml.load(readFileSync(`${checkDir}health_test.yaml`, "utf8")) as { tests: HealthTest[] }
).tests;

/** A Lua 5.1 string literal: printable ASCII as is, everything else as \ddd byte escapes. */
function luaString(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(b);
    out += b >= 0x20 && b < 0x7f && c !== '"' && c !== "\\" ? c : `\\${String(b).padStart(3, "0")}`;
  }
  return out + '"';
}

/** A Lua table literal for a YAML/JSON value, as Argo CD hands an object to a health check. */
function toLua(v: unknown): string {
  if (v === null || v === undefined) return "nil";
  if (typeof v === "string") return luaString(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`cannot express ${v} in Lua`);
    return String(v);
  }
  if (Array.isArray(v)) return `{${v.map(toLua).join(", ")}}`;
  if (typeof v === "object") {
    const fields = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== null && x !== undefined)
      .map(([k, x]) => `[${luaString(k)}] = ${toLua(x)}`);
    return `{${fields.join(", ")}}`;
  }
  throw new Error(`cannot express a ${typeof v} in Lua`);
}

function runHealth(object: unknown): { status: string; message: string } {
  const r = spawnSync(LUA, [driver, healthLua], {
    input: `return ${toLua(object)}\n`,
    encoding: "utf8",
  });
  if (r.error)
    throw new Error(`cannot run ${LUA} (make install provides lua5.1): ${r.error.message}`);
  assert.equal(r.status, 0, `lua5.1 failed: ${r.stderr}`);
  const nl = r.stdout.indexOf("\n");
  return { status: r.stdout.slice(0, nl), message: r.stdout.slice(nl + 1) };
}

test("health_test.yaml covers every testdata object, at least six", () => {
  assert.ok(cases.length >= 6, `only ${cases.length} cases`);
  const used = new Set(cases.map((c) => c.inputPath));
  for (const f of readdirSync(`${checkDir}testdata`))
    assert.ok(used.has(`testdata/${f}`), `testdata/${f} is in no test`);
  for (const status of ["Healthy", "Progressing", "Degraded", "Suspended"])
    assert.ok(
      cases.some((c) => c.healthStatus.status === status),
      `no case expects ${status}`,
    );
});

for (const c of cases) {
  test(`${c.inputPath} → ${c.healthStatus.status}`, () => {
    const object = yaml.load(readFileSync(`${checkDir}${c.inputPath}`, "utf8"));
    assert.deepEqual(runHealth(object), {
      status: c.healthStatus.status,
      message: c.healthStatus.message,
    });
  });
}

test("Lua strings survive quotes, backslashes, newlines and UTF-8", () => {
  const message = 'a "quoted" C:\\path\nsecond line — ✓ 1\t2';
  const h = runHealth({
    metadata: { name: "x", generation: 1 },
    status: {
      observedGeneration: 1,
      phase: "Ready",
      conditions: [{ type: "Ready", status: "True", reason: "Provisioned", message }],
    },
  });
  assert.deepEqual(h, { status: "Healthy", message });
});

for (const [name, reasons] of [
  ["progressReasons", PROGRESS_REASONS],
  ["suspendedReasons", SUSPENDED_REASONS],
] as const) {
  test(`the check's ${name} are the operator's`, () => {
    const lua = readFileSync(healthLua, "utf8");
    const table = new RegExp(`local ${name} = \\{([^}]*)\\}`).exec(lua);
    assert.ok(table, `${name} table not found in health.lua`);
    const inLua = [...table[1]!.matchAll(/(\w+)\s*=\s*true/g)].map((m) => m[1]).sort();
    assert.deepEqual(inLua, [...reasons].sort());
  });
}

test("Ready reason PoweredOff alone makes it Suspended, whatever the phase", () => {
  const h = runHealth({
    metadata: { name: "x", generation: 2 },
    status: {
      observedGeneration: 2,
      phase: "Configuring",
      conditions: [{ type: "Ready", status: "False", reason: "PoweredOff", message: "off" }],
    },
  });
  assert.deepEqual(h, { status: "Suspended", message: "off" });
});

test("argocd-cm.yaml embeds health.lua unchanged", () => {
  const cm = yaml.load(readFileSync(`${root}deploy/argocd/argocd-cm.yaml`, "utf8")) as {
    kind: string;
    metadata: { name: string };
    data: Record<string, string>;
  };
  assert.equal(cm.kind, "ConfigMap");
  assert.equal(cm.metadata.name, "argocd-cm");
  assert.equal(
    cm.data["resource.customizations.health.provisioning.vsop.dev_VirtualServer"],
    readFileSync(healthLua, "utf8"),
  );
});

test("application.yaml is an Argo CD Application for a path of VirtualServers", () => {
  const app = yaml.load(readFileSync(`${root}deploy/argocd/application.yaml`, "utf8")) as {
    apiVersion: string;
    kind: string;
    metadata: { finalizers?: string[] };
    spec: { source: { repoURL: string; path: string }; destination: { server: string } };
  };
  assert.equal(app.apiVersion, "argoproj.io/v1alpha1");
  assert.equal(app.kind, "Application");
  assert.ok(app.spec.source.repoURL && app.spec.source.path);
  assert.ok(app.spec.destination.server);
  assert.equal(app.metadata.finalizers, undefined, "a cascade finalizer would destroy VMs");
});

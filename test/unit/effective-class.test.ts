// The class parsed once: defaults, durations, InvalidClass for what cannot be used.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as yaml from "js-yaml";
import type { VirtualServerClass } from "../../src/api/types.js";
import { effectiveClass, InvalidClassField } from "../../src/api/effective-class.js";
import { DURATION_PATTERN, durationSeconds } from "../../src/api/duration.js";

const cls = (spec: Record<string, unknown>) =>
  ({ metadata: { name: "c" }, spec }) as unknown as VirtualServerClass;

test("defaults: network boot, 1h install timeout, 5m shutdown timeout, 30m run timeout, no interval", () => {
  const s = effectiveClass(cls({}));
  assert.equal(s.bootMethod, "network");
  assert.deepEqual(s.installTimeout, { text: "1h", seconds: 3600 });
  assert.deepEqual(s.shutdownTimeout, { text: "5m", seconds: 300 });
  assert.deepEqual(s.puppet.runTimeout, { text: "30m", seconds: 1800 });
  assert.equal(s.puppet.intervalSeconds, undefined);
  assert.equal(s.network.bootPortGroup, "Boot-VLAN");
});

test("durations are parsed once into seconds", () => {
  const s = effectiveClass(
    cls({
      boot: { installTimeout: "90m" },
      hardware: { shutdownTimeout: "90s" },
      puppet: { interval: "6h", runTimeout: "45s" },
    }),
  );
  assert.equal(s.installTimeout.seconds, 5400);
  assert.equal(s.shutdownTimeout.seconds, 90);
  assert.equal(s.puppet.intervalSeconds, 21600);
  assert.equal(s.puppet.runTimeout.seconds, 45);
});

for (const [field, spec] of [
  ["puppet.interval", { puppet: { interval: "every day" } }],
  ["puppet.runTimeout", { puppet: { runTimeout: "0s" } }],
  ["boot.installTimeout", { boot: { installTimeout: "1d" } }],
  ["hardware.shutdownTimeout", { hardware: { shutdownTimeout: "soon" } }],
] as const) {
  test(`a bad ${field} is InvalidClassField naming it; lenient (deleting) uses the default`, () => {
    assert.throws(
      () => effectiveClass(cls(spec)),
      (e: unknown) => e instanceof InvalidClassField && e.field === field,
    );
    assert.doesNotThrow(() => effectiveClass(cls(spec), true));
  });
}

test("a vlanCIDRs entry that is no IPv4 network is InvalidClass, not skipped for vlanOctet", () => {
  const good = [
    { cidr: "10.20.0.0/16", vlan: 200 },
    { cidr: "0.0.0.0/0", vlan: 9 },
  ];
  assert.deepEqual(effectiveClass(cls({ network: { vlanCIDRs: good } })).network.vlanCIDRs, good);
  for (const bad of ["10.20.0.0/33", "10.20.0/16", "10.300.0.0/16", "10.20.0.0", "10.20.0.0/16/8"])
    assert.throws(
      () => effectiveClass(cls({ network: { vlanCIDRs: [...good, { cidr: bad, vlan: 7 }] } })),
      (e: unknown) =>
        e instanceof InvalidClassField &&
        e.field === "network.vlanCIDRs[2].cidr" &&
        e.message.includes(`"${bad}" is not an IPv4 network`),
      bad,
    );
  const lenient = cls({ network: { vlanCIDRs: [{ cidr: "bad", vlan: 7 }] } });
  assert.doesNotThrow(() => effectiveClass(lenient, true), "deleting is never blocked");
});

test("the CRD's duration fields carry the pattern the parser accepts", () => {
  const crd = readFileSync("crds/virtualserverclasses.provisioning.vsop.dev.yaml", "utf8");
  const text = JSON.stringify(yaml.load(crd));
  const patterns = text.match(/"pattern":"\^\[0-9\][^"]*"/g) ?? [];
  assert.equal(patterns.length, 5, "installTimeout, shutdownTimeout, interval, runTimeout, splay");
  for (const p of patterns) assert.equal(JSON.parse(`{${p}}`).pattern, DURATION_PATTERN);
  for (const ok of ["30s", "10m", "1.5h", "250ms", "90"])
    assert.ok(durationSeconds(ok) !== undefined, ok);
  for (const bad of ["1d", "m", "-5s", "5 s", ""]) assert.equal(durationSeconds(bad), undefined);
});

test("cloneMode Linked needs a template, secureBoot needs efi, antiAffinity needs a cluster", () => {
  const bad = (spec: Record<string, unknown>, field: RegExp) =>
    assert.throws(
      () => effectiveClass({ metadata: { name: "c" }, spec } as unknown as VirtualServerClass),
      field,
    );
  bad({ hardware: { cloneMode: "Linked" } }, /hardware.cloneMode "Linked" needs hardware.template/);
  bad(
    { hardware: { secureBoot: true, firmware: "bios" } },
    /hardware.secureBoot .* needs hardware.firmware efi/,
  );
  bad(
    { placement: { datacenter: "d", datastore: "s", antiAffinity: "ByAppTypeAndEnvironment" } },
    /placement.antiAffinity .* needs placement.cluster/,
  );
  const ok = effectiveClass({
    metadata: { name: "c" },
    spec: { hardware: { cloneMode: "Linked", template: "t", firmware: "efi", secureBoot: true } },
  } as unknown as VirtualServerClass);
  assert.equal(ok.antiAffinity, "None");
});

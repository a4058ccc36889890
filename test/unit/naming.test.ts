import { test } from "node:test";
import assert from "node:assert/strict";
import { parseHostname, partLabels } from "../../src/naming/hostname.js";
import { deriveVLAN, fillVLAN, inCIDR } from "../../src/naming/vlan.js";
import { StepError } from "../../src/errors.js";

test("default convention: <apptype>-<environment>-<instance>.<domain>", () => {
  const p = parseHostname("web-prod-1.example.com");
  assert.deepEqual(
    { a: p.apptype, e: p.environment, i: p.instance, d: p.domain, s: p.shortName },
    { a: "web", e: "prod", i: "1", d: "example.com", s: "web-prod-1" },
  );
  assert.deepEqual(partLabels(p), {
    "provisioning.vsop.dev/apptype": "web",
    "provisioning.vsop.dev/environment": "prod",
    "provisioning.vsop.dev/instance": "1",
  });
  assert.throws(
    () => parseHostname("webserver.example.com"),
    (e: StepError) => e.reason === "NameConventionViolation",
  );
  assert.throws(() => parseHostname("web-prod-x.example.com"), StepError);
});

test("a class pattern with named groups", () => {
  const p = parseHostname(
    "lon1-db-07.corp.test",
    "^(?<environment>[a-z0-9]+)-(?<apptype>[a-z]+)-(?<instance>\\d+)\\.(?<domain>.+)$",
  );
  assert.equal(p.apptype, "db");
  assert.equal(p.environment, "lon1");
  assert.throws(
    () => parseHostname("x.y", "(["),
    (e: StepError) => e.reason === "InvalidClass",
  );
});

test("VLAN from the third octet, another octet, or a CIDR map", () => {
  assert.equal(deriveVLAN("10.12.30.20", { vlanOctet: 3, vlanCIDRs: [] }), 30);
  assert.equal(deriveVLAN("10.12.30.20", { vlanOctet: 2, vlanCIDRs: [] }), 12);
  assert.equal(
    deriveVLAN("192.168.5.9", { vlanOctet: 3, vlanCIDRs: [{ cidr: "192.168.0.0/16", vlan: 700 }] }),
    700,
  );
  assert.throws(
    () => deriveVLAN("10.12.0.20", { vlanOctet: 3, vlanCIDRs: [] }),
    (e: StepError) => e.reason === "VLANNotDerivable",
  );
  assert.ok(inCIDR("10.1.2.3", "10.0.0.0/8"));
  assert.ok(!inCIDR("11.1.2.3", "10.0.0.0/8"));
  assert.equal(fillVLAN("VLAN-{vlan}", 30), "VLAN-30");
});

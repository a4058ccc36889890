// One table turns what a step threw into the reason and condition a person sees.
import { test } from "node:test";
import assert from "node:assert/strict";
import { classify } from "../../src/reconcile/engine/classify.js";
import { StepError } from "../../src/errors.js";
import { InvalidClassField } from "../../src/api/effective-class.js";
import { KubeUnreachable } from "../../src/controller/kube.js";
import { NetworkConfigError } from "../../src/provision/network-config.js";
import { TemplateError } from "../../src/provision/template.js";
import { VSphereFault, VSphereTaskError, VSphereUnreachable } from "../../src/vsphere/errors.js";
import { PortGroupNotFound } from "../../src/vsphere/vcenter.js";

const CASES: [string, unknown, string, string, string | undefined, string | undefined][] = [
  // what, error, step → reason, condition, condition status
  [
    "a default route in the rendered network config",
    new NetworkConfigError(["routes[0] is a default route"]),
    "prepare",
    "TemplateError",
    "Installed",
    undefined,
  ],
  [
    "a broken template",
    new TemplateError("user-data", 3, "bad tag"),
    "prepare",
    "TemplateError",
    "Installed",
    undefined,
  ],
  [
    "a bad duration in the class",
    new InvalidClassField("puppet.interval", "soon", "is not a duration"),
    "puppet",
    "InvalidClass",
    undefined,
    undefined,
  ],
  [
    "a full datastore",
    new VSphereTaskError("task-1", "NoDiskSpace", "full"),
    "vm",
    "DatastoreFull",
    "VMCreated",
    undefined,
  ],
  [
    "vCenter away",
    new VSphereUnreachable("https://vc", "ECONNREFUSED"),
    "vm",
    "VCenterUnreachable",
    "VMCreated",
    "Unknown",
  ],
  [
    "a refused login",
    new VSphereFault("InvalidLogin", "Login", ""),
    "prepare",
    "VCenterAuthFailed",
    "Installed",
    undefined,
  ],
  [
    "the API server away",
    new KubeUnreachable("PUT", "/apis/x", "ECONNRESET"),
    "installed",
    "APIServerUnavailable",
    "Installed",
    "Unknown",
  ],
  [
    "a port group gone",
    new PortGroupNotFound("VLAN-9", "DC0"),
    "handoff",
    "VSphereError",
    undefined,
    undefined,
  ],
  ["a bug", new TypeError("x is undefined"), "vm", "InternalError", undefined, undefined],
];

for (const [what, err, step, reason, condition, status] of CASES) {
  test(`classify: ${what} in step ${step} → ${reason}`, () => {
    const e = classify(err, step);
    assert.ok(e instanceof StepError);
    assert.equal(e.reason, reason);
    assert.equal(e.options.condition, condition);
    assert.equal(e.options.status, status);
    assert.ok(!e.message.includes("[object"), e.message);
  });
}

test("classify: a StepError a step made on purpose passes unchanged", () => {
  const own = new StepError("VMNameConflict", "taken", { condition: "VMCreated" });
  assert.equal(classify(own, "vm"), own);
});

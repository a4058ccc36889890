// vSphere faults as condition reasons, for the faults vcsim cannot produce (a full datastore, a
// cluster out of CPU or memory), and the vCenter client pool shared by classes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { StepError } from "../../src/errors.js";
import {
  VSphereFault,
  VSphereTaskError,
  VSphereTLSError,
  VSphereUnreachable,
} from "../../src/vsphere/errors.js";
import { PlacementNotFound, PortGroupNotFound } from "../../src/vsphere/vcenter.js";
import { portGroupError, vsphereStepError } from "../../src/reconcile/engine/vsphere-errors.js";
import { VCenterPool } from "../../src/reconcile/clients/vcenters.js";
import { ConfigReader } from "../../src/reconcile/clients/secrets.js";
import type { Kube } from "../../src/controller/kube.js";
import type { VirtualServerClass } from "../../src/api/types.js";
import { bootOrderSignature, toVMRecord } from "../../src/vsphere/vms.js";
import { bootOrder } from "../../src/vsphere/devices.js";

const SENTENCE = /^\S.{20,}\.$/;

function taskError(fault: string, message: string): VSphereTaskError {
  return new VSphereTaskError("task-42", fault, message, {
    method: "CreateVM_Task",
    entity: "web-prod-1",
  });
}

test("a full datastore (NoDiskSpace, InsufficientStorageSpace) → DatastoreFull", () => {
  for (const fault of ["NoDiskSpace", "InsufficientStorageSpace"]) {
    const e = vsphereStepError(taskError(fault, "There is not enough space on the file system."), {
      condition: "VMCreated",
    });
    assert.equal(e.reason, "DatastoreFull", fault);
    assert.equal(e.options.condition, "VMCreated");
    assert.match(e.message, SENTENCE);
    assert.match(e.message, new RegExp(fault));
    assert.match(e.message, /CreateVM_Task on web-prod-1/);
    assert.doesNotMatch(e.message, /\.\./, "no doubled period");
  }
});

test("not enough CPU or memory, including the subclasses vCenter really reports → InsufficientResources", () => {
  for (const fault of [
    "InsufficientResourcesFault",
    "InsufficientMemoryResourcesFault",
    "InsufficientCpuResourcesFault",
    "InsufficientHostCapacityFault",
    "InsufficientHostMemoryCapacityFault",
    "InsufficientFailoverResourcesFault",
    "NotEnoughCpus",
  ]) {
    const e = vsphereStepError(taskError(fault, "Insufficient resources to satisfy the request"), {
      condition: "VMCreated",
    });
    assert.equal(e.reason, "InsufficientResources", fault);
    assert.match(e.message, SENTENCE);
    assert.match(e.message, /Free capacity/);
  }
  // A SOAP fault (not a task) maps alike.
  const soap = vsphereStepError(new VSphereFault("InsufficientMemoryResourcesFault", "X", "no"));
  assert.equal(soap.reason, "InsufficientResources");
});

test("other task faults stay VSphereError, with vCenter's words", () => {
  const e = vsphereStepError(
    taskError("InvalidDeviceSpec", "Invalid configuration for device '0'."),
  );
  assert.equal(e.reason, "VSphereError");
  assert.match(e.message, /InvalidDeviceSpec/);
});

test("connection faults: TLS, unreachable (Unknown), refused login", () => {
  const tls = vsphereStepError(
    new VSphereTLSError("https://vc/sdk", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
  );
  assert.equal(tls.reason, "VCenterTLSError");
  assert.match(tls.message, SENTENCE);
  const down = vsphereStepError(new VSphereUnreachable("https://vc/sdk", "ECONNREFUSED"));
  assert.equal(down.reason, "VCenterUnreachable");
  assert.equal(down.options.status, "Unknown");
  const auth = vsphereStepError(new VSphereFault("InvalidLogin", "Login", "Login failure"));
  assert.equal(auth.reason, "VCenterAuthFailed");
  assert.match(auth.message, SENTENCE);
});

test("missing placement objects are named, each with its own reason", () => {
  const cases = [
    ["datastore", "LocalDS_9", "DatastoreNotFound"],
    ["folder", "nope/deeper", "FolderNotFound"],
    ["resourcePool", "pool-x", "ResourcePoolNotFound"],
    ["cluster", "DC0_C9", "ClusterNotFound"],
    ["datacenter", "DC9", "DatacenterNotFound"],
  ] as const;
  for (const [what, name, reason] of cases) {
    const e = vsphereStepError(new PlacementNotFound(what, name, "DC0"), {
      condition: "VMCreated",
    });
    assert.equal(e.reason, reason);
    assert.ok(e.message.includes(`"${name}"`), e.message);
    assert.match(e.message, SENTENCE);
  }
});

test("missing port groups: the VLAN's and the Boot-VLAN's", () => {
  const vlan = portGroupError(new PortGroupNotFound("VLAN-40", "DC0"), false, "VLAN-40", 40);
  assert.equal(vlan.reason, "VLANPortGroupMissing");
  assert.match(vlan.message, /"VLAN-40" for VLAN 40/);
  const boot = portGroupError(new PortGroupNotFound("Boot-Nope", "DC0"), true, "Boot-Nope");
  assert.equal(boot.reason, "BootPortGroupMissing");
  assert.match(boot.message, /"Boot-Nope"/);
  // Anything else is not a missing port group.
  const other = portGroupError(new VSphereUnreachable("u", "ECONNRESET"), false, "VLAN-40", 40);
  assert.equal(other.reason, "VCenterUnreachable");
  assert.ok(other instanceof StepError);
});

// --- the client pool -----------------------------------------------------------------------------

function cls(name: string, secret: string, caBundle = ""): VirtualServerClass {
  return {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServerClass",
    metadata: { name },
    spec: {
      // Nothing listens there: the clients' update loops just fail and back off.
      vcenter: { url: "https://127.0.0.1:9/sdk", credentialsSecret: secret, caBundle },
      placement: { datacenter: "DC0", datastore: "LocalDS_0" },
      mcollective: { brokerURL: "amqp://127.0.0.1/", keysSecret: "k" },
    },
  };
}

test("VCenterPool: classes that differ only in password or CA keep a client each, not replacing each other", async () => {
  const secrets: Record<string, Record<string, string>> = {
    good: { username: "vsop", password: "right" },
    bad: { username: "vsop", password: "wrong" },
    copy: { username: "vsop", password: "right" },
  };
  const kube = {
    get: (path: string) => {
      const name = path.split("/").pop()!;
      const data = Object.fromEntries(
        Object.entries(secrets[name]!).map(([k, v]) => [k, Buffer.from(v).toString("base64")]),
      );
      return Promise.resolve({ data });
    },
  } as unknown as Kube;
  const pool = new VCenterPool(new ConfigReader(kube, "vsop-system", 0), pino({ level: "silent" }));
  try {
    const good = cls("good", "good");
    const bad = cls("bad", "bad");
    const otherCA = cls("other-ca", "good", "-----BEGIN CERTIFICATE-----\n");
    const shared = cls("shared", "copy");
    const a = await pool.get(good);
    const b = await pool.get(bad);
    const c = await pool.get(otherCA);
    assert.notEqual(a, b);
    assert.notEqual(a, c);
    for (let i = 0; i < 3; i++) {
      assert.equal(await pool.get(good), a, "the good class keeps its client");
      assert.equal(await pool.get(bad), b, "the bad class keeps its client");
      assert.equal(await pool.get(otherCA), c);
    }
    assert.equal(await pool.get(shared), a, "same connection (another Secret), same client");

    // A class whose Secret changes moves to a new client; the old one stays while others use it.
    secrets.bad = { username: "vsop", password: "right" };
    assert.equal(await pool.get(bad), a, "now the same connection as the good class");
    secrets.good = { username: "vsop", password: "newer" };
    const a2 = await pool.get(good);
    assert.notEqual(a2, a);
    assert.equal(await pool.get(shared), a, "still used by shared and bad");
  } finally {
    await pool.stop();
  }
});

// --- finishing a VM an operator left unfinished ------------------------------------------------

test("bootOrderSignature: comparable boot order of the cache and of bootOptionsFor", () => {
  const order = bootOrder({ cdrom: true, ethernetKey: 4000, diskKey: 2000 });
  assert.deepEqual(bootOrderSignature(order), ["Cdrom", "Ethernet:4000", "Disk:2000"]);
  assert.deepEqual(bootOrderSignature([]), []);
  const props = {
    name: "web-prod-1",
    "config.bootOptions": {
      _type: "VirtualMachineBootOptions",
      bootOrder: order.slice(1),
    },
  };
  assert.deepEqual(toVMRecord("vm-1", props, () => undefined).bootOrder, [
    "Ethernet:4000",
    "Disk:2000",
  ]);
  assert.deepEqual(toVMRecord("vm-1", { name: "x" }, () => undefined).bootOrder, []);
});

// placement.storagePolicy and placement.datastoreCluster: the SPBM calls (policy by name, compatibility), the create spec that
// carries the policy, and the reasons a person reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  compatibleDatastores,
  storagePolicyByName,
  StoragePolicyIncompatible,
  StoragePolicyNotFound,
  withStoragePolicy,
} from "../../src/vsphere/pbm.js";
import { PBM_SERVICE, type SoapService } from "../../src/vsphere/soap.js";
import { MoRef, type Node } from "../../src/vsphere/xml.js";
import { vsphereStepError } from "../../src/reconcile/engine/vsphere-errors.js";
import { datastoreOf } from "../../src/vsphere/vms.js";
import type { VirtualServerStatus } from "../../src/api/types.js";
import type { ReconcileContext } from "../../src/reconcile/engine/context.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import {
  NoStorageDrsRecommendation,
  PlacementNotFound,
  type CreateVMSpec,
} from "../../src/vsphere/vcenter.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

/** An SPBM endpoint with two policies; the fast one allows datastore-1 only. */
function fakePbm() {
  const calls: string[] = [];
  const invoke = async (
    method: string,
    _this: MoRef,
    args: Record<string, unknown> = {},
    service?: SoapService,
  ): Promise<Node> => {
    assert.equal(service, PBM_SERVICE, `${method} goes to /pbm`);
    calls.push(method);
    switch (method) {
      case "PbmRetrieveServiceContent":
        return {
          profileManager: new MoRef("PbmProfileProfileManager", "ProfileManager"),
          placementSolver: new MoRef("PbmPlacementSolver", "placementSolver"),
        };
      case "PbmQueryProfile":
        return [{ uniqueId: "id-gold" }, { uniqueId: "id-fast" }];
      case "PbmRetrieveContent":
        return [
          { _type: "PbmCapabilityProfile", profileId: { uniqueId: "id-gold" }, name: "Gold" },
          { _type: "PbmCapabilityProfile", profileId: { uniqueId: "id-fast" }, name: "Fast" },
        ];
      case "PbmCheckCompatibility": {
        const hubs = args.hubsToSearch as { hubId: string }[];
        const fast = (args.profile as { uniqueId: string }).uniqueId === "id-fast";
        return hubs.map((h) => ({
          hub: { hubType: "Datastore", hubId: h.hubId },
          ...(fast && h.hubId !== "datastore-1" ? { error: [{ message: "no" }] } : {}),
        }));
      }
    }
    throw new Error(`unexpected ${method}`);
  };
  return { invoke, calls };
}

test("a storage policy is found by its name; an unknown one lists the known names", async () => {
  const pbm = fakePbm();
  assert.deepEqual(await storagePolicyByName(pbm, "Fast"), { id: "id-fast", name: "Fast" });
  await assert.rejects(
    storagePolicyByName(pbm, "Platinum"),
    (err: unknown) => err instanceof StoragePolicyNotFound && err.known.join() === "Fast,Gold",
  );
});

test("compatible datastores: the ones without an error, in the order asked", async () => {
  const pbm = fakePbm();
  const fast = { id: "id-fast", name: "Fast" };
  const gold = { id: "id-gold", name: "Gold" };
  assert.deepEqual(await compatibleDatastores(pbm, fast, ["datastore-2", "datastore-1"]), [
    "datastore-1",
  ]);
  assert.deepEqual(await compatibleDatastores(pbm, gold, ["datastore-2", "datastore-1"]), [
    "datastore-2",
    "datastore-1",
  ]);
});

test("the create spec carries the policy on the VM and on the disk it creates, not on NICs", () => {
  const config = {
    deviceChange: [
      { operation: "add", device: { _type: "ParaVirtualSCSIController" } },
      { operation: "add", fileOperation: "create", device: { _type: "VirtualDisk" } },
      { operation: "add", device: { _type: "VirtualVmxnet3" } },
    ],
  };
  withStoragePolicy(config, { id: "id-gold", name: "Gold" });
  const spec = [{ _type: "VirtualMachineDefinedProfileSpec", profileId: "id-gold" }];
  assert.deepEqual((config as Record<string, unknown>).vmProfile, spec);
  assert.deepEqual(
    config.deviceChange.map((c) => (c as { profile?: unknown }).profile),
    [undefined, spec, undefined],
  );
});

test("reasons: StoragePolicyNotFound and StoragePolicyIncompatible say nothing was created", () => {
  const nf = vsphereStepError(new StoragePolicyNotFound("Platinum", ["Gold"]));
  assert.equal(nf.reason, "StoragePolicyNotFound");
  assert.match(
    nf.message,
    /"Platinum" is not a storage policy in vCenter \(it has: Gold\); nothing was created/,
  );
  const inc = vsphereStepError(new StoragePolicyIncompatible("Fast", "datastore-2"));
  assert.equal(inc.reason, "StoragePolicyIncompatible");
  assert.match(inc.message, /datastore-2 does not satisfy/);
});

test("status.vm.datastore is the system disk's datastore", () => {
  const disk = { key: 2000, capacityKiB: 1, fileName: "[LocalDS_0] w/w.vmdk", slot: "scsi0:0" };
  assert.equal(datastoreOf({ disks: [disk], extraConfig: {} }), "LocalDS_0");
  assert.equal(datastoreOf({ disks: [], extraConfig: {} }), undefined);
});

test("datastoreCluster: Storage DRS asked once, the choice recorded before the VM is created there", async () => {
  const vc = new FakeVSphere();
  const asked: string[] = [];
  vc.recommendDatastore = async (_p: unknown, pod: string) => {
    asked.push(pod);
    return "PodDS_1";
  };
  const created: CreateVMSpec[] = [];
  const create = vc.startCreateVM.bind(vc);
  vc.startCreateVM = (spec: CreateVMSpec) => {
    created.push(spec);
    return create(spec);
  };
  const cls = {
    placement: { datacenter: "DC0", datastoreCluster: "pod-gold" },
    boot: { method: "guestinfo", assumeInstalled: true },
  };
  let status: VirtualServerStatus = {};
  for (let i = 0; i < 3; i++) {
    const ctx = stepContext(structuredClone(status), cls);
    ctx.resolved = {
      address: "10.12.30.5",
      vlan: 30,
      portGroup: "VLAN-30",
    } as ReconcileContext["resolved"];
    ctx.extraNetworks = [];
    await vmStep({ get: async () => vc }).run(ctx);
    status = ctx.status;
    if (i === 0) assert.equal(status.vm?.datastore, "PodDS_1", "chosen first, nothing created");
    if (i === 0) assert.equal(created.length, 0);
  }
  assert.deepEqual(asked, ["pod-gold"], "asked once");
  assert.equal(created.length, 1);
  assert.equal(created[0]!.placement.datastore, "PodDS_1");
  assert.equal(status.vm?.task?.operation, "CreateVM");
});

test("datastoreCluster: reasons for a missing cluster and for no recommendation", () => {
  const nf = vsphereStepError(new PlacementNotFound("datastoreCluster", "pod-x", "DC0"));
  assert.equal(nf.reason, "DatastoreClusterNotFound");
  const none = vsphereStepError(new NoStorageDrsRecommendation("pod-x"));
  assert.equal(none.reason, "DatastoreClusterNoRecommendation");
});

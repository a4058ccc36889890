// Pure parts of the vSphere layer: decoding, applying property changes, device lists, specs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MoRef, decodeResponse, encode, type Node } from "../../src/vsphere/xml.js";
import {
  VMCache,
  applyChange,
  parseUpdateSet,
  pathSegments,
  type ObjectUpdate,
} from "../../src/vsphere/cache.js";
import {
  deviceList,
  editDevice,
  freeIdeSlot,
  nicRecords,
  type NetworkBacking,
} from "../../src/vsphere/devices.js";
import {
  InvalidVMSpec,
  bootOptionsFor,
  cloneSpec,
  createConfigSpec,
  extraConfigDelta,
  toVMRecord,
  validateCreateSpec,
  type CreateVMSpec,
} from "../../src/vsphere/vms.js";
import { inFlight, taskOutcome, taskStateOf } from "../../src/vsphere/task-state.js";
import { checkFilePath, folderUrl } from "../../src/vsphere/datastore.js";
import { inventoryPath } from "../../src/vsphere/inventory.js";
import type { NodeObject } from "../../src/vsphere/nodes.js";

const XSI = 'xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"';

function envelope(body: string): string {
  return (
    '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">' +
    `<soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>${body}</returnval>` +
    "</RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"
  );
}

const DEVICES_XML =
  `<val ${XSI} XMLSchema-instance:type="ArrayOfVirtualDevice">` +
  '<VirtualDevice XMLSchema-instance:type="VirtualIDEController"><key>200</key><busNumber>0</busNumber><device>3000</device></VirtualDevice>' +
  '<VirtualDevice XMLSchema-instance:type="VirtualIDEController"><key>201</key><busNumber>1</busNumber></VirtualDevice>' +
  '<VirtualDevice XMLSchema-instance:type="VirtualCdrom"><key>3000</key>' +
  '<backing XMLSchema-instance:type="VirtualCdromIsoBackingInfo"><fileName>[ds] a.iso</fileName></backing>' +
  "<connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>false</connected></connectable>" +
  "<controllerKey>200</controllerKey><unitNumber>0</unitNumber></VirtualDevice>" +
  '<VirtualDevice XMLSchema-instance:type="VirtualDisk"><key>2000</key>' +
  '<backing XMLSchema-instance:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] vm/vm.vmdk</fileName><diskMode>persistent</diskMode></backing>' +
  "<controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>1048576</capacityInKB></VirtualDevice>" +
  '<VirtualDevice XMLSchema-instance:type="VirtualVmxnet3"><key>4000</key><deviceInfo XMLSchema-instance:type="Description"><label>Network adapter 1</label></deviceInfo>' +
  '<backing XMLSchema-instance:type="VirtualEthernetCardDistributedVirtualPortBackingInfo"><port><switchUuid>u-1</switchUuid><portgroupKey>dvportgroup-30</portgroupKey></port></backing>' +
  "<connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>true</connected></connectable>" +
  "<controllerKey>100</controllerKey><unitNumber>7</unitNumber><addressType>assigned</addressType><macAddress>00:50:56:00:00:01</macAddress></VirtualDevice>" +
  '<VirtualDevice XMLSchema-instance:type="VirtualE1000"><key>4001</key><deviceInfo XMLSchema-instance:type="Description"><label>Network adapter 2</label></deviceInfo>' +
  '<backing XMLSchema-instance:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName><network type="Network">network-7</network></backing>' +
  "<connectable><startConnected>false</startConnected><allowGuestControl>true</allowGuestControl><connected>false</connected></connectable>" +
  "<controllerKey>100</controllerKey><unitNumber>8</unitNumber><macAddress>00:50:56:00:00:02</macAddress></VirtualDevice>" +
  "</val>";

const EXTRA_XML =
  `<val ${XSI} XMLSchema-instance:type="ArrayOfOptionValue">` +
  '<OptionValue XMLSchema-instance:type="OptionValue"><key>vsop.owner-uid</key><value XMLSchema-instance:type="xsd:string">uid-1</value></OptionValue>' +
  '<OptionValue XMLSchema-instance:type="OptionValue"><key>vsop.owner</key><value XMLSchema-instance:type="xsd:string">default/web</value></OptionValue>' +
  '<OptionValue XMLSchema-instance:type="OptionValue"><key>guestinfo.empty</key><value XMLSchema-instance:type="xsd:string"></value></OptionValue>' +
  '<OptionValue XMLSchema-instance:type="OptionValue"><key>govcsim</key><value XMLSchema-instance:type="xsd:string">TRUE</value></OptionValue>' +
  "</val>";

function decodedVal(valXml: string): Node {
  const { body } = decodeResponse(
    envelope(
      `<objects><obj type="VirtualMachine">vm-1</obj><propSet><name>x</name>${valXml}</propSet></objects>`,
    ),
  );
  return ((body as NodeObject).objects as NodeObject).propSet as NodeObject;
}

function vmProps(): Record<string, Node> {
  return {
    name: "web-prod-1",
    "config.hardware.device": (decodedVal(DEVICES_XML) as NodeObject).val!,
    "config.extraConfig": (decodedVal(EXTRA_XML) as NodeObject).val!,
    "config.hardware.numCPU": "2",
    "config.hardware.memoryMB": "4096",
    "config.cpuHotAddEnabled": "true",
    "runtime.powerState": "poweredOn",
    parent: new MoRef("Folder", "group-4"),
  };
}

const pgNames = (key: string) => ({ "dvportgroup-30": "VLAN-30" })[key];

test("decode: a prefixed xsi:type (Go's XMLSchema-instance:type) becomes _type", () => {
  const val = (decodedVal(DEVICES_XML) as NodeObject).val as NodeObject;
  assert.equal(val._type, "ArrayOfVirtualDevice");
  const devices = deviceList(val);
  assert.deepEqual(
    devices.map((d) => d._type),
    [
      "VirtualIDEController",
      "VirtualIDEController",
      "VirtualCdrom",
      "VirtualDisk",
      "VirtualVmxnet3",
      "VirtualE1000",
    ],
  );
  assert.ok(devices[5]!.backing && (devices[5]!.backing as NodeObject).network instanceof MoRef);
});

test("toVMRecord: NICs with port group names, CD-ROM ISO, disks, owner marks, filtered extraConfig", () => {
  const r = toVMRecord("vm-1", vmProps(), pgNames);
  assert.equal(r.name, "web-prod-1");
  assert.equal(r.ownerUID, "uid-1");
  assert.equal(r.owner, "default/web");
  assert.equal(r.folder, "group-4");
  assert.deepEqual(
    [r.cpus, r.memoryMiB, r.cpuHotAddEnabled, r.memoryHotAddEnabled],
    [2, 4096, true, false],
  );
  assert.deepEqual(r.nics, [
    {
      key: 4000,
      label: "Network adapter 1",
      macAddress: "00:50:56:00:00:01",
      portGroup: "VLAN-30",
      connected: true,
      startConnected: true,
    },
    {
      key: 4001,
      label: "Network adapter 2",
      macAddress: "00:50:56:00:00:02",
      portGroup: "VM Network",
      connected: false,
      startConnected: false,
    },
  ]);
  assert.deepEqual(r.cdroms, [
    { key: 3000, isoPath: "[ds] a.iso", connected: false, startConnected: true },
  ]);
  assert.deepEqual(r.disks, [{ key: 2000, capacityKiB: 1048576, fileName: "[ds] vm/vm.vmdk" }]);
  assert.deepEqual(r.extraConfig, {
    "vsop.owner-uid": "uid-1",
    "vsop.owner": "default/web",
    "guestinfo.empty": "",
  });
});

test("pathSegments parses keyed and dotted property paths", () => {
  assert.deepEqual(pathSegments('["guestinfo.a.b"]'), [{ key: "guestinfo.a.b" }]);
  assert.deepEqual(pathSegments("[4000].connectable.connected"), [
    { key: "4000" },
    { field: "connectable" },
    { field: "connected" },
  ]);
});

test("applyChange: whole, keyed, nested and parent changes", () => {
  const tracked = [
    "config.hardware.device",
    "config.extraConfig",
    "config.hardware.numCPU",
    "name",
  ];
  const props = vmProps();
  applyChange(props, tracked, {
    name: "config.hardware.device[4000].connectable.connected",
    op: "assign",
    val: "false",
  });
  applyChange(props, tracked, {
    name: 'config.extraConfig["guestinfo.x"]',
    op: "add",
    val: { _type: "OptionValue", key: "guestinfo.x", value: "1" },
  });
  applyChange(props, tracked, { name: 'config.extraConfig["vsop.owner"]', op: "remove" });
  applyChange(props, tracked, { name: "config.hardware.device[4001]", op: "remove" });
  applyChange(props, tracked, {
    name: "config.hardware",
    op: "assign",
    val: { numCPU: "8", memoryMB: "1", device: props["config.hardware.device"]! },
  });
  applyChange(props, tracked, { name: "name", op: "assign", val: "renamed" });
  const r = toVMRecord("vm-1", props, pgNames);
  assert.equal(r.nics.length, 1);
  assert.equal(r.nics[0]!.connected, false);
  assert.equal(r.extraConfig["guestinfo.x"], "1");
  assert.equal(r.owner, undefined);
  assert.equal(r.cpus, 8);
  assert.equal(r.name, "renamed");
});

function enter(value: string, changes: Record<string, Node>): ObjectUpdate {
  return {
    kind: "enter",
    obj: new MoRef(
      value.startsWith("vm-") ? "VirtualMachine" : "DistributedVirtualPortgroup",
      value,
    ),
    changeSet: Object.entries(changes).map(([name, val]) => ({ name, op: "assign", val })),
  };
}

test("VMCache: enter, modify, leave; port group names; a modify before enter is ignored", () => {
  const cache = new VMCache();
  cache.apply([
    enter("vm-1", vmProps()),
    enter("dvportgroup-30", { name: "Service-30", key: "dvportgroup-30" }),
    {
      kind: "modify",
      obj: new MoRef("VirtualMachine", "vm-9"),
      changeSet: [{ name: "name", op: "assign", val: "x" }],
    },
  ]);
  assert.equal(cache.size, 1);
  assert.equal(cache.get("vm-1")?.nics[0]?.portGroup, "Service-30");
  cache.apply([
    {
      kind: "modify",
      obj: new MoRef("VirtualMachine", "vm-1"),
      changeSet: [{ name: "runtime.powerState", op: "assign", val: "poweredOff" }],
    },
  ]);
  assert.equal(cache.get("vm-1")?.powerState, "poweredOff");
  cache.apply([{ kind: "leave", obj: new MoRef("VirtualMachine", "vm-1"), changeSet: [] }]);
  assert.equal(cache.get("vm-1"), undefined);
});

test("VMCache resync: the snapshot replaces everything; our reads since a mark are listed", () => {
  const cache = new VMCache();
  cache.apply([enter("vm-1", { name: "a" }), enter("vm-2", { name: "b" })]);
  const mark = cache.readMark;
  cache.upsertVM("vm-3", { name: "created-meanwhile" });
  cache.removeVM("vm-1");
  // The update loop reads these again after the snapshot (update-loop.test.ts).
  assert.deepEqual(cache.readAfter(mark).sort(), ["vm-1", "vm-3"]);
  cache.finishResync([enter("vm-2", { name: "b" })]);
  assert.deepEqual(
    cache
      .all()
      .map((v) => v.name)
      .sort(),
    ["b"],
  );
});

test("VMCache.ownedBy follows enter, a clone, a marker removed, our reads, leave and resync", () => {
  const cache = new VMCache();
  const refs = () =>
    cache
      .ownedBy("uid-1")
      .map((v) => v.moRef)
      .sort();
  cache.apply([enter("vm-1", vmProps()), enter("vm-2", { name: "other" })]);
  assert.deepEqual(refs(), ["vm-1"]);
  cache.apply([enter("vm-5", vmProps())]); // cloned in vCenter: the marker twice
  assert.deepEqual(refs(), ["vm-1", "vm-5"]);
  cache.apply([
    {
      kind: "modify",
      obj: new MoRef("VirtualMachine", "vm-5"),
      changeSet: [{ name: 'config.extraConfig["vsop.owner-uid"]', op: "remove" }],
    },
  ]);
  assert.deepEqual(refs(), ["vm-1"], "the copy's marker cleared");
  cache.upsertVM("vm-2", vmProps()); // our own read finds the marker on vm-2
  assert.deepEqual(refs(), ["vm-1", "vm-2"]);
  cache.removeVM("vm-2");
  cache.apply([{ kind: "leave", obj: new MoRef("VirtualMachine", "vm-1"), changeSet: [] }]);
  assert.deepEqual(refs(), []);
  cache.finishResync([enter("vm-7", vmProps())]);
  assert.deepEqual(refs(), ["vm-7"]);
  assert.deepEqual(cache.ownedBy("uid-none"), []);
});

test("parseUpdateSet reads version, truncation and object updates", () => {
  const set = parseUpdateSet({
    version: "7",
    truncated: "true",
    filterSet: {
      filter: new MoRef("PropertyFilter", "f"),
      objectSet: {
        kind: "modify",
        obj: new MoRef("VirtualMachine", "vm-1"),
        changeSet: { name: "runtime.powerState", op: "assign", val: "poweredOn" },
      },
    },
  });
  assert.deepEqual(set, {
    version: "7",
    truncated: true,
    updates: [
      {
        kind: "modify",
        obj: new MoRef("VirtualMachine", "vm-1"),
        changeSet: [{ name: "runtime.powerState", op: "assign", val: "poweredOn" }],
      },
    ],
  });
  assert.equal(parseUpdateSet(""), undefined);
});

const SPEC: CreateVMSpec = {
  name: "web-prod-1",
  placement: { datacenter: "DC0", datastore: "ds1" },
  guestId: "rhel9_64Guest",
  cpus: 2,
  memoryMiB: 4096,
  diskGiB: 20,
  nics: [
    { portGroup: "VLAN-30", role: "service" },
    { portGroup: "Boot-VLAN", role: "boot" },
  ],
  extraConfig: { "vsop.owner-uid": "uid-1", "vsop.owner": "default/web-prod-1" },
};

const NETS: NetworkBacking[] = [
  { kind: "distributed", name: "VLAN-30", portgroupKey: "dvportgroup-30", switchUuid: "u-1" },
  { kind: "standard", name: "VM Network", network: new MoRef("Network", "network-7") },
];

test("createConfigSpec: WSDL order, pvscsi + thin disk + vmxnet3 NICs, typed extraConfig values", () => {
  const xml = encode("config", createConfigSpec(SPEC, "ds1", NETS));
  const order = [
    "<name>",
    "<guestId>",
    "<files>",
    "<numCPUs>",
    "<memoryMB>",
    "<deviceChange>",
    "<extraConfig>",
  ];
  const positions = order.map((t) => xml.indexOf(t));
  assert.ok(
    positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1]!)),
    xml,
  );
  assert.match(xml, /<device xsi:type="ParaVirtualSCSIController"><key>-100<\/key>/);
  assert.match(xml, /<fileOperation>create<\/fileOperation><device xsi:type="VirtualDisk">/);
  assert.match(xml, /<thinProvisioned>true<\/thinProvisioned>/);
  assert.match(xml, /<capacityInKB>20971520<\/capacityInKB>/);
  assert.match(
    xml,
    /<port><switchUuid>u-1<\/switchUuid><portgroupKey>dvportgroup-30<\/portgroupKey><\/port>/,
  );
  assert.match(
    xml,
    /<deviceName>VM Network<\/deviceName><network type="Network">network-7<\/network>/,
  );
  assert.equal(xml.match(/xsi:type="VirtualVmxnet3"/g)?.length, 2);
  assert.match(xml, /<key>vsop.owner-uid<\/key><value xsi:type="xsd:string">uid-1<\/value>/);
  assert.match(xml, /<vmPathName>\[ds1\]<\/vmPathName>/);
});

test("cloneSpec removes the template's NICs, adds ours and grows a smaller disk", () => {
  const template = deviceList(vmProps()["config.hardware.device"]);
  const spec = cloneSpec(
    SPEC,
    template,
    { datastore: new MoRef("Datastore", "ds-1"), pool: new MoRef("ResourcePool", "rp-1") },
    NETS,
  );
  const xml = encode("spec", spec);
  assert.equal(xml.match(/<operation>remove<\/operation>/g)?.length, 2);
  assert.equal(xml.match(/<operation>add<\/operation>/g)?.length, 2);
  assert.match(xml, /<operation>edit<\/operation><device xsi:type="VirtualDisk"><key>2000<\/key>/);
  assert.match(
    xml,
    /<capacityInKB>20971520<\/capacityInKB><capacityInBytes>21474836480<\/capacityInBytes>/,
  );
  assert.match(
    xml,
    /<location><datastore type="Datastore">ds-1<\/datastore><pool type="ResourcePool">rp-1<\/pool><\/location><template>false<\/template>/,
  );
  assert.ok(xml.endsWith("<powerOn>false</powerOn></spec>"));
});

test("bootOptionsFor: boot NIC then disk; CD-ROM first; nothing without either", () => {
  const record = toVMRecord("vm-1", vmProps(), (k) => ({ "dvportgroup-30": "Boot-VLAN" })[k]);
  const nicFirst = bootOptionsFor(
    { ...SPEC, nics: [{ portGroup: "Boot-VLAN", role: "boot" }] },
    record,
  );
  assert.deepEqual(nicFirst, {
    bootOrder: [
      { _type: "VirtualMachineBootOptionsBootableEthernetDevice", deviceKey: "4000" },
      { _type: "VirtualMachineBootOptionsBootableDiskDevice", deviceKey: "2000" },
    ],
  });
  const cd = bootOptionsFor({ ...SPEC, nics: [], bootFromCdrom: true }, record);
  assert.equal(
    (cd?.bootOrder as NodeObject[])[0]!._type,
    "VirtualMachineBootOptionsBootableCdromDevice",
  );
  assert.equal(
    bootOptionsFor({ ...SPEC, nics: [{ portGroup: "VLAN-30", role: "service" }] }, record),
    undefined,
  );
});

test("editDevice sets connection flags in WSDL order and leaves the cache copy alone", () => {
  const nic = deviceList(vmProps()["config.hardware.device"]).find((d) => d.key === "4000")!;
  const edited = editDevice(nic, { startConnected: false, connected: false });
  assert.deepEqual(Object.keys(edited).slice(0, 5), [
    "_type",
    "key",
    "deviceInfo",
    "backing",
    "connectable",
  ]);
  assert.deepEqual(edited.connectable, {
    startConnected: "false",
    allowGuestControl: "true",
    connected: "false",
  });
  assert.equal((nic.connectable as NodeObject).connected, "true");
  const bare = editDevice(
    { _type: "VirtualCdrom", key: "1", controllerKey: "200", unitNumber: "1" },
    {
      startConnected: true,
      connected: false,
      backing: { _type: "VirtualCdromIsoBackingInfo", fileName: "[ds] x.iso" },
    },
  );
  assert.deepEqual(Object.keys(bare), [
    "_type",
    "key",
    "backing",
    "connectable",
    "controllerKey",
    "unitNumber",
  ]);
});

test("freeIdeSlot skips used units", () => {
  const devices = deviceList(vmProps()["config.hardware.device"]);
  assert.deepEqual(freeIdeSlot(devices), { controllerKey: 200, unitNumber: 1 });
  assert.equal(freeIdeSlot([]), undefined);
});

test("nicRecords falls back to the port group key when the name is unknown", () => {
  const nics = nicRecords(deviceList(vmProps()["config.hardware.device"]), () => undefined);
  assert.equal(nics[0]!.portGroup, "dvportgroup-30");
});

test("extraConfigDelta sends only changes; an empty value removes only present keys", () => {
  assert.deepEqual(extraConfigDelta({ a: "1", b: "2" }, { a: "1", b: "3", c: "", d: "4", e: "" }), {
    b: "3",
    d: "4",
  });
  assert.deepEqual(extraConfigDelta({ a: "1" }, { a: "" }), { a: "" });
});

test("validateCreateSpec requires the owner marks", () => {
  validateCreateSpec(SPEC);
  assert.throws(
    () => validateCreateSpec({ ...SPEC, extraConfig: { "vsop.owner": "x" } }),
    (e) => e instanceof InvalidVMSpec && /vsop.owner-uid/.test(e.message),
  );
  assert.throws(() => validateCreateSpec({ ...SPEC, cpus: 0 }), InvalidVMSpec);
});

test("taskOutcome reads the fault type of a failed task", () => {
  assert.deepEqual(
    taskOutcome({
      "info.state": "error",
      "info.error": {
        fault: { _type: "NoDiskSpace", datastore: "ds1" },
        localizedMessage: "no space",
      },
    }),
    { state: "error", fault: "NoDiskSpace", message: "no space" },
  );
  assert.deepEqual(taskOutcome({ "info.state": "running" }), { state: "running" });
});

test("taskStateOf: no properties is a task vCenter no longer lists; queued and running are in flight", () => {
  assert.deepEqual(taskStateOf({}), { state: "gone" });
  const states = ["queued", "running", "success"].map((s) => taskStateOf({ "info.state": s }));
  assert.deepEqual(states.map(inFlight), [true, true, false]);
  assert.equal(inFlight(taskStateOf({})), false);
  assert.equal(inFlight(taskStateOf({ "info.state": "error", "info.error": {} })), false);
});

test("datastore URLs are encoded and cannot leave the datastore", () => {
  assert.equal(
    folderUrl("https://vc.example.com/sdk", "DC 0", "ds#1", "vsop/a b.iso"),
    "https://vc.example.com/folder/vsop/a%20b.iso?dcPath=DC+0&dsName=ds%231",
  );
  assert.throws(() => checkFilePath("../etc/passwd"));
  assert.throws(() => checkFilePath(""));
  assert.equal(inventoryPath("/DC0/", "vm", "", "a/b"), "DC0/vm/a/b");
});

test("a linked clone: the template's snapshot, child disks, the disk not grown; firmware and Secure Boot", () => {
  const template = deviceList(vmProps()["config.hardware.device"]);
  const spec = cloneSpec(
    { ...SPEC, linkedClone: true, firmware: "efi", secureBoot: true },
    template,
    { datastore: new MoRef("Datastore", "ds-1"), pool: new MoRef("ResourcePool", "rp-1") },
    NETS,
    new MoRef("VirtualMachineSnapshot", "snapshot-7"),
  );
  const xml = encode("spec", spec);
  assert.match(
    xml,
    /<location><datastore type="Datastore">ds-1<\/datastore><diskMoveType>createNewChildDiskBacking<\/diskMoveType><pool type="ResourcePool">rp-1<\/pool><\/location>/,
  );
  assert.ok(
    xml.endsWith(
      '<powerOn>false</powerOn><snapshot type="VirtualMachineSnapshot">snapshot-7</snapshot></spec>',
    ),
    "snapshot after powerOn (WSDL order)",
  );
  assert.doesNotMatch(xml, /<operation>edit<\/operation><device xsi:type="VirtualDisk">/);
  assert.match(
    xml,
    /<firmware>efi<\/firmware><bootOptions><efiSecureBootEnabled>true<\/efiSecureBootEnabled><\/bootOptions><\/config>/,
  );

  const created = encode(
    "config",
    createConfigSpec({ ...SPEC, firmware: "efi", secureBoot: true }, "ds1", NETS),
  );
  assert.match(created, /<firmware>efi<\/firmware><bootOptions><efiSecureBootEnabled>true/);
  assert.doesNotMatch(
    encode("config", createConfigSpec(SPEC, "ds1", NETS)),
    /firmware|bootOptions/,
  );

  // The boot order is set later as a whole bootOptions: Secure Boot goes with it, first.
  const record = toVMRecord("vm-1", vmProps(), (k) => ({ "dvportgroup-30": "Boot-VLAN" })[k]);
  const boot = bootOptionsFor(
    { ...SPEC, secureBoot: true, nics: [{ portGroup: "Boot-VLAN", role: "boot" }] },
    record,
  );
  assert.deepEqual(Object.keys(boot!), ["efiSecureBootEnabled", "bootOrder"]);
});

// The vSphere operations layer against the stack's vcsim; every outcome is checked again with govc.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { pino, type Logger } from "pino";
import {
  DatastoreUploadFailed,
  PlacementNotFound,
  PortGroupNotFound,
  VCenter,
  type CreateVMSpec,
  type Placement,
  type VCenterOptions,
} from "../../src/vsphere/vcenter.js";
import { VSphereFault, VSphereTaskError, VSphereUnreachable } from "../../src/vsphere/errors.js";
import { SoapTransport } from "../../src/vsphere/soap.js";
import { MoRef } from "../../src/vsphere/xml.js";
import { stackEnv } from "../support/env.js";
import { privateVcsim } from "../support/vcsim.js";
import { TcpProxy, throughPort } from "../support/proxy.js";

const DC = "DC0";
const DS = "LocalDS_0";
const PREFIX = `vst-${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
const DIR = `${PREFIX}-files`;
const PLACEMENT: Placement = { datacenter: DC, cluster: "DC0_C0", datastore: DS };
const caBundle = readFileSync(stackEnv("GOVC_TLS_CA_CERTS"), "utf8");

/** Every log line, to prove no password is ever written. */
const logLines: string[] = [];
function captureLogger(level = "debug"): Logger {
  return pino({ level }, { write: (s: string) => void logLines.push(s) });
}

function options(extra: Partial<VCenterOptions> = {}): VCenterOptions {
  return {
    url: stackEnv("GOVC_URL"),
    caBundle,
    username: stackEnv("GOVC_USERNAME"),
    password: stackEnv("GOVC_PASSWORD"),
    logger: captureLogger(),
    ...extra,
  };
}

function govc(args: string[], env: Record<string, string> = {}): string {
  return execFileSync(stackEnv("VSOP_GOVC"), args, {
    encoding: "utf8",
    env: { ...process.env, GOVC_DATACENTER: DC, ...env },
  });
}

interface GovcDevice {
  name: string;
  type: string;
  key: number;
  backing?: {
    fileName?: string;
    deviceName?: string;
    port?: { portgroupKey?: string };
  };
  connectable?: { connected: boolean; startConnected: boolean };
  capacityInKB?: number;
}

function devices(vm: string): GovcDevice[] {
  return (JSON.parse(govc(["device.info", "-json", "-vm", vm])) as { devices: GovcDevice[] })
    .devices;
}

interface GovcVM {
  self: { value: string };
  config: {
    hardware: { numCPU: number; memoryMB: number };
    bootOptions: { bootOrder?: { deviceKey?: number }[] };
    extraConfig: { key: string; value: string }[];
  };
  runtime: { powerState: string };
}

function vmInfo(vm: string): GovcVM {
  const info = JSON.parse(govc(["vm.info", "-json", vm])) as { virtualMachines: GovcVM[] | null };
  assert.ok(info.virtualMachines?.length, `govc does not see ${vm}`);
  return info.virtualMachines[0]!;
}

function vmExists(vm: string): boolean {
  return govc(["find", "/", "-type", "m", "-name", vm]).trim() !== "";
}

function extraConfig(vm: string): Record<string, string> {
  return Object.fromEntries(vmInfo(vm).config.extraConfig.map((o) => [o.key, o.value]));
}

function portGroupKey(name: string): string {
  return govc(["object.collect", "-s", `/${DC}/network/${name}`, "key"]).trim();
}

function spec(name: string, extra: Partial<CreateVMSpec> = {}): CreateVMSpec {
  return {
    name,
    placement: PLACEMENT,
    guestId: "otherLinux64Guest",
    cpus: 1,
    memoryMiB: 512,
    diskGiB: 1,
    nics: [
      { portGroup: "VLAN-30", role: "service" },
      { portGroup: "Boot-VLAN", role: "boot" },
    ],
    extraConfig: { "vsop.owner-uid": `uid-${name}`, "vsop.owner": `default/${name}` },
    ...extra,
  };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

let vc: VCenter;

before(async () => {
  vc = new VCenter(options());
  await vc.start();
});

after(async () => {
  await vc?.stop();
  // Whatever a failed test left behind.
  for (const path of govc(["find", "/", "-type", "m", "-name", `${PREFIX}*`]).split("\n")) {
    if (path.trim()) govc(["vm.destroy", path.trim()]);
  }
  try {
    govc(["datastore.rm", "-ds", DS, "-f", DIR]);
  } catch {
    // not created
  }
  const password = stackEnv("GOVC_PASSWORD");
  assert.ok(!logLines.some((l) => l.includes(password)), "a log line carries the password");
});

// --- the lifecycle of one VM, step by step ------------------------------------------------------

const LIFE = `${PREFIX}-life`;
let lifeRef = "";

test("createVM: service NIC on VLAN-30, boot NIC on Boot-VLAN first in the boot order, owner marks", async (t) => {
  // Warm the placement memo, so the count below is what a steady reconcile pays.
  await vc.checkPlacement(PLACEMENT);
  for (const pg of ["VLAN-30", "Boot-VLAN"]) await vc.checkPortGroup(DC, pg);
  const before = vc.requestCount();
  lifeRef = await vc.createVM(spec(LIFE));
  const delta = Object.entries(vc.requestCount())
    .map(([m, n]) => [m, n - (before[m] ?? 0)] as const)
    .filter(([, n]) => n > 0);
  const total = delta.reduce((a, [, n]) => a + n, 0);
  t.diagnostic(
    `SOAP requests for createVM (placement memoized): ${total} ${JSON.stringify(Object.fromEntries(delta))}`,
  );

  // The cache has it at once, without a request.
  const reads = vc.requestTotal();
  const record = vc.get(lifeRef);
  assert.equal(vc.findByOwnerUID(`uid-${LIFE}`)?.moRef, lifeRef);
  assert.equal(vc.requestTotal(), reads);
  assert.ok(record);
  assert.equal(record.name, LIFE);
  assert.equal(record.powerState, "poweredOff");
  assert.deepEqual(
    record.nics.map((n) => n.portGroup),
    ["VLAN-30", "Boot-VLAN"],
  );

  // govc's view.
  const info = vmInfo(LIFE);
  assert.equal(info.self.value, lifeRef);
  assert.equal(info.runtime.powerState, "poweredOff");
  const nics = devices(LIFE).filter((d) => d.type === "VirtualVmxnet3");
  assert.deepEqual(
    nics.map((n) => n.backing?.port?.portgroupKey),
    [portGroupKey("VLAN-30"), portGroupKey("Boot-VLAN")],
  );
  const disk = devices(LIFE).find((d) => d.type === "VirtualDisk");
  assert.equal(disk?.capacityInKB, 1024 * 1024);
  assert.ok(devices(LIFE).some((d) => d.type === "ParaVirtualSCSIController"));
  const order = info.config.bootOptions.bootOrder ?? [];
  assert.equal(order[0]?.deviceKey, nics[1]!.key, "boot NIC first");
  assert.equal(order[1]?.deviceKey, disk?.key, "then the disk");
  const ec = extraConfig(LIFE);
  assert.equal(ec["vsop.owner-uid"], `uid-${LIFE}`);
  assert.equal(ec["vsop.owner"], `default/${LIFE}`);
});

test("powerOn and powerOff, each a no-op when already in that state", async () => {
  await vc.powerOn(lifeRef);
  assert.equal(vmInfo(LIFE).runtime.powerState, "poweredOn");
  assert.equal(vc.get(lifeRef)?.powerState, "poweredOn");
  const before = vc.requestTotal();
  await vc.powerOn(lifeRef);
  assert.equal(vc.requestTotal(), before, "powerOn of a running VM sends nothing");

  await vc.powerOff(lifeRef);
  assert.equal(vmInfo(LIFE).runtime.powerState, "poweredOff");
  const again = vc.requestTotal();
  await vc.powerOff(lifeRef);
  assert.equal(vc.requestTotal(), again, "powerOff of a stopped VM sends nothing");
  await vc.powerOn(lifeRef);
});

test("setNicConnected disconnects the boot NIC of a running VM (checked with govc)", async () => {
  const boot = vc.get(lifeRef)!.nics.find((n) => n.portGroup === "Boot-VLAN")!;
  const service = vc.get(lifeRef)!.nics.find((n) => n.portGroup === "VLAN-30")!;
  assert.equal(boot.connected, true, "connected after power on");
  await vc.setNicConnected(lifeRef, boot.key, false);
  const dev = devices(LIFE).find((d) => d.key === boot.key);
  assert.deepEqual(
    { connected: dev?.connectable?.connected, startConnected: dev?.connectable?.startConnected },
    { connected: false, startConnected: false },
  );
  const other = devices(LIFE).find((d) => d.key === service.key);
  assert.equal(other?.connectable?.connected, true, "the service NIC stays connected");
  assert.equal(vc.get(lifeRef)!.nics.find((n) => n.key === boot.key)?.connected, false);

  const before = vc.requestTotal();
  await vc.setNicConnected(lifeRef, boot.key, false);
  assert.equal(vc.requestTotal(), before, "already disconnected: nothing sent");
});

test("resize changes CPUs and memory", async () => {
  await vc.resize(lifeRef, { cpus: 2, memoryMiB: 1024 });
  const hw = vmInfo(LIFE).config.hardware;
  assert.deepEqual({ cpus: hw.numCPU, mem: hw.memoryMB }, { cpus: 2, mem: 1024 });
  assert.equal(vc.get(lifeRef)?.cpus, 2);
  assert.equal(vc.get(lifeRef)?.memoryMiB, 1024);
});

test("setExtraConfig sets keys, and an empty value removes one", async () => {
  await vc.setExtraConfig(lifeRef, { "guestinfo.vsop.test": "hello", "vsop.phase": "installing" });
  let ec = extraConfig(LIFE);
  assert.equal(ec["guestinfo.vsop.test"], "hello");
  assert.equal(ec["vsop.phase"], "installing");
  assert.equal(vc.get(lifeRef)?.extraConfig["guestinfo.vsop.test"], "hello");

  await vc.setExtraConfig(lifeRef, { "guestinfo.vsop.test": "" });
  ec = extraConfig(LIFE);
  assert.ok(!("guestinfo.vsop.test" in ec), "removed");
  assert.equal(ec["vsop.phase"], "installing", "other keys stay");
  assert.equal(ec["vsop.owner-uid"], `uid-${LIFE}`, "owner mark stays");
  assert.ok(!("guestinfo.vsop.test" in vc.get(lifeRef)!.extraConfig));
});

test("destroy powers off and removes the VM; destroying it again is fine", async () => {
  await vc.destroy(lifeRef);
  assert.equal(vmExists(LIFE), false);
  assert.equal(vc.get(lifeRef), undefined);
  await vc.destroy(lifeRef);
});

// --- datastore files and ISO ------------------------------------------------------------------

test("uploadFile writes a datastore file, deleteFile removes it, a missing file is fine", async () => {
  const path = `${DIR}/files/hello.txt`;
  const body = Buffer.from(`hello from ${PREFIX}\n`);
  await vc.uploadFile(DC, DS, path, body);
  assert.match(govc(["datastore.ls", "-ds", DS, `${DIR}/files`]), /hello\.txt/);
  assert.equal(govc(["datastore.download", "-ds", DS, path, "-"]), body.toString());

  await vc.deleteFile(DC, DS, path);
  assert.doesNotMatch(govc(["datastore.ls", "-ds", DS, `${DIR}/files`]), /hello\.txt/);
  await vc.deleteFile(DC, DS, path);

  await assert.rejects(
    vc.uploadFile(DC, "NoSuchDatastore", path, body),
    (e) => e instanceof DatastoreUploadFailed && e.status === 404,
  );
});

test("a tracked task's end wakes its owner once, also a task that changes no VM; reads stop after", async () => {
  // A datastore file's deletion changes no VM, so the update loop never reports it: the wake can
  // only come from the task watch.
  // Only this test's keys: the update loop also wakes the owners of other tests' VMs.
  const woken: string[] = [];
  const own = new VCenter(
    options({ wake: (key) => void (key.startsWith("ns/") && woken.push(key)) }),
  );
  await own.start();
  try {
    const path = `${DIR}/watch/gone.txt`;
    await own.uploadFile(DC, DS, path, Buffer.from("x\n"));
    const startedAt = new Date().toISOString();
    const task = await own.startDeleteFile(DC, DS, path);
    own.track({ operation: "DeleteISO", moRef: task, startedAt }, "ns/file");
    // A task vCenter does not know (restarted since, or long ago): its owner looks too.
    own.track({ operation: "PowerOn", moRef: "task-424242", startedAt }, "ns/unknown");
    const ms = await waitFor(
      "both owners woken",
      () => woken.includes("ns/file") && woken.includes("ns/unknown"),
      3000,
    );
    assert.ok(ms < 2000, `woken after ${ms} ms`);
    // Woken once each: the ended tasks are not read again while their owners have not looked.
    // The watch's own reads: the update loop reads other tests' changed VMs meanwhile.
    const reads = () => own.taskWatchReads();
    const before = reads();
    assert.ok(before > 0, "the wakes came from the task watch's reads");
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual([...woken].sort(), ["ns/file", "ns/unknown"]);
    assert.equal(reads(), before, "ended tasks were read again");
    assert.equal((await own.taskState(task)).state, "success");
    own.forget("ns/file", task);
    own.forget("ns/unknown", "task-424242");
  } finally {
    await own.stop();
  }
});

test("a CD-ROM boot VM: attachIso and detachIso (checked with govc)", async () => {
  const name = `${PREFIX}-iso`;
  const iso = `${DIR}/${name}.iso`;
  await vc.uploadFile(DC, DS, iso, Buffer.alloc(4096, 1));
  const ref = await vc.createVM(
    spec(name, { nics: [{ portGroup: "VLAN-30", role: "service" }], bootFromCdrom: true }),
  );
  const cdrom = devices(name).find((d) => d.type === "VirtualCdrom");
  assert.ok(cdrom, "a CD-ROM drive was added");
  const order = vmInfo(name).config.bootOptions.bootOrder ?? [];
  assert.equal(order.length, 2);
  assert.equal(order[0]?.deviceKey, undefined, "the CD-ROM (no device key) boots first");
  assert.equal(order[1]?.deviceKey, devices(name).find((d) => d.type === "VirtualDisk")?.key);

  const isoPath = `[${DS}] ${iso}`;
  await vc.attachIso(ref, isoPath);
  let dev = devices(name).find((d) => d.key === cdrom.key);
  assert.equal(dev?.backing?.fileName, isoPath);
  assert.equal(dev?.connectable?.startConnected, true);
  assert.equal(vc.get(ref)?.cdroms[0]?.isoPath, isoPath);

  await vc.powerOn(ref);
  assert.equal(devices(name).find((d) => d.key === cdrom.key)?.connectable?.connected, true);

  await vc.detachIso(ref);
  dev = devices(name).find((d) => d.key === cdrom.key);
  assert.equal(dev?.backing?.fileName, undefined);
  assert.equal(dev?.connectable?.connected, false);
  assert.equal(vc.get(ref)?.cdroms[0]?.isoPath, undefined);

  await vc.destroy(ref);
  assert.equal(vmExists(name), false);
});

// --- cloning -------------------------------------------------------------------------------------

test("createVM from a template: our NICs replace the template's, disk grown, owner marks", async () => {
  const tplName = `${PREFIX}-tpl`;
  const tpl = await vc.createVM(
    spec(tplName, { nics: [{ portGroup: "VLAN-10", role: "service" }], diskGiB: 1 }),
  );
  govc(["vm.markastemplate", tplName]);
  const name = `${PREFIX}-clone`;
  const ref = await vc.createVM(
    spec(name, {
      template: tplName,
      cpus: 2,
      memoryMiB: 1024,
      diskGiB: 2,
      nics: [
        { portGroup: "VM Network", role: "service" },
        { portGroup: "Boot-VLAN", role: "boot" },
      ],
    }),
  );
  const devs = devices(name);
  const nics = devs.filter(
    (d) => d.type.startsWith("VirtualVmxnet") || d.type.startsWith("VirtualE1000"),
  );
  assert.equal(nics.length, 2, "the template's NIC is gone");
  assert.equal(nics[0]?.backing?.deviceName, "VM Network");
  assert.equal(nics[1]?.backing?.port?.portgroupKey, portGroupKey("Boot-VLAN"));
  assert.equal(devs.find((d) => d.type === "VirtualDisk")?.capacityInKB, 2 * 1024 * 1024);
  assert.equal(vmInfo(name).config.hardware.numCPU, 2);
  assert.equal(extraConfig(name)["vsop.owner-uid"], `uid-${name}`);
  assert.equal(vmInfo(name).config.bootOptions.bootOrder?.[0]?.deviceKey, nics[1]!.key);
  assert.deepEqual(
    vc.get(ref)?.nics.map((n) => n.portGroup),
    ["VM Network", "Boot-VLAN"],
  );
  await vc.destroy(ref);
  await vc.destroy(tpl);
  assert.equal(vmExists(name) || vmExists(tplName), false);
});

test("createVM places the VM in the given folder and resource pool", async () => {
  const folder = `${PREFIX}-folder`;
  govc(["folder.create", `/${DC}/vm/${folder}`]);
  try {
    const name = `${PREFIX}-placed`;
    const placement: Placement = {
      datacenter: DC,
      resourcePool: "DC0_C0/Resources",
      datastore: DS,
      folder,
    };
    const ref = await vc.createVM(spec(name, { placement }));
    assert.equal(
      govc(["find", `/${DC}/vm/${folder}`, "-type", "m"]).trim(),
      `/${DC}/vm/${folder}/${name}`,
    );
    const pool = govc([
      "object.collect",
      "-s",
      `/${DC}/vm/${folder}/${name}`,
      "resourcePool",
    ]).trim();
    assert.equal(
      pool,
      govc(["object.collect", "-s", `/${DC}/host/DC0_C0/Resources`, "self"]).trim(),
    );
    await vc.destroy(ref);
  } finally {
    govc(["object.destroy", `/${DC}/vm/${folder}`]);
  }
});

// --- errors ------------------------------------------------------------------------------------

test("checkPlacement names what is missing", async () => {
  await vc.checkPlacement(PLACEMENT);
  await vc.checkPlacement({ ...PLACEMENT, resourcePool: "DC0_C0/Resources" });
  await vc.checkPlacement({ datacenter: DC, resourcePool: "Resources", datastore: DS });
  const cases: [Partial<Placement>, string, string][] = [
    [{ datacenter: "DC9" }, "datacenter", "DC9"],
    [{ folder: "no/such/folder" }, "folder", "no/such/folder"],
    [{ cluster: "NoCluster" }, "cluster", "NoCluster"],
    [{ resourcePool: "NoPool" }, "resourcePool", "NoPool"],
    [{ datastore: "NoDatastore" }, "datastore", "NoDatastore"],
  ];
  for (const [change, what, objectName] of cases) {
    await assert.rejects(
      vc.checkPlacement({ ...PLACEMENT, ...change }),
      (e) => e instanceof PlacementNotFound && e.what === what && e.objectName === objectName,
      what,
    );
  }
  await assert.rejects(
    vc.createVM(spec(`${PREFIX}-notpl`, { template: "no-such-template" })),
    (e) => e instanceof PlacementNotFound && e.what === "template",
  );
  assert.equal(vmExists(`${PREFIX}-notpl`), false);
});

test("checkPortGroup: distributed and standard networks pass, a missing one is named", async () => {
  for (const pg of ["VLAN-30", "Boot-VLAN", "DC0_DVPG0", "VM Network"])
    await vc.checkPortGroup(DC, pg);
  await assert.rejects(
    vc.checkPortGroup(DC, "VLAN-99"),
    (e) => e instanceof PortGroupNotFound && e.objectName === "VLAN-99",
  );
  const name = `${PREFIX}-nopg`;
  await assert.rejects(
    vc.createVM(spec(name, { nics: [{ portGroup: "VLAN-99", role: "service" }] })),
    PortGroupNotFound,
  );
  assert.equal(vmExists(name), false, "nothing created");
});

test("DuplicateName is a typed task fault", async () => {
  await assert.rejects(
    vc.createVM(spec("DC0_C0_RP0_VM0")),
    (e) => e instanceof VSphereTaskError && e.fault === "DuplicateName",
  );
  // vSphere's own DuplicateName, from a CloneVM_Task onto an existing name.
  const index = (await vc.session.serviceContent()).searchIndex!;
  const find = async (path: string) =>
    (await vc.session.invoke("FindByInventoryPath", index, { inventoryPath: path })) as MoRef;
  const source = await find(`${DC}/vm/DC0_C0_RP0_VM0`);
  const task = (await vc.session.invoke("CloneVM_Task", source, {
    folder: await find(`${DC}/vm`),
    name: "DC0_C0_RP0_VM0",
    spec: { location: {}, template: "false", powerOn: "false" },
  })) as MoRef;
  await assert.rejects(
    vc.waitTask(task.value, { method: "CloneVM_Task", entity: source.value }),
    (e) =>
      e instanceof VSphereTaskError &&
      e.fault === "DuplicateName" &&
      e.method === "CloneVM_Task" &&
      e.entity === source.value,
  );
});

test("a wrong password is InvalidLogin, and a second call within the backoff sends no Login", async () => {
  const bad = new VCenter(options({ password: `wrong-${PREFIX}` }));
  try {
    await assert.rejects(
      bad.start(),
      (e) => e instanceof VSphereFault && e.fault === "InvalidLogin",
    );
    assert.equal(bad.session.loginCount, 1);
    await assert.rejects(
      bad.checkPlacement(PLACEMENT),
      (e) => e instanceof VSphereFault && e.fault === "InvalidLogin",
    );
    assert.equal(bad.session.loginCount, 1);
    assert.equal(bad.synced(), false);
  } finally {
    await bad.stop();
  }
  assert.ok(!logLines.some((l) => l.includes(`wrong-${PREFIX}`)));
});

test("insecureSkipVerify logs one warning", async () => {
  const lines: string[] = [];
  const logger = pino({ level: "warn" }, { write: (s: string) => void lines.push(s) });
  const insecure = new VCenter({
    ...options(),
    caBundle: undefined,
    insecureSkipVerify: true,
    logger,
  });
  await insecure.checkPlacement(PLACEMENT);
  await insecure.checkPortGroup(DC, "VLAN-30");
  await insecure.stop();
  assert.equal(lines.filter((l) => l.includes("insecureSkipVerify")).length, 1);
});

test("a connection dropped as it is reused: a read goes again on a new one, a task does not", async () => {
  const vcsim = new URL(stackEnv("GOVC_URL"));
  const proxy = await new TcpProxy(() => [Number(vcsim.port)]).start();
  const sent: string[] = [];
  const soap = new SoapTransport({
    url: throughPort(stackEnv("GOVC_URL"), proxy.port),
    caBundle,
    timeoutMs: 10_000,
    onCall: (m) => void sent.push(m),
  });
  const si = new MoRef("ServiceInstance", "ServiceInstance");
  try {
    await soap.call("RetrieveServiceContent", si);
    assert.equal(proxy.connections, 1);
    // vCenter's load balancer (or a vcsim handler that panicked) drops the kept-alive connection.
    proxy.resetOnNextSend();
    const content = await soap.call("RetrieveServiceContent", si);
    assert.match(JSON.stringify(content), /rootFolder/);
    assert.equal(sent.length, 3, "the read was sent once more");
    assert.equal(proxy.connections, 2, "on a new connection");
    // A task is never sent twice: its owner's next pass finds out what became of it.
    proxy.resetOnNextSend();
    await assert.rejects(
      soap.call("PowerOnVM_Task", new MoRef("VirtualMachine", "vm-none")),
      (e) => e instanceof VSphereUnreachable && e.code === "ECONNRESET",
    );
    assert.equal(sent.length, 4);
    assert.equal(proxy.connections, 2, "not sent again");
  } finally {
    await proxy.close();
  }
});

// --- the cache -------------------------------------------------------------------------------

test("the cache sees a VM created by govc within seconds, and reading it sends nothing", async (t) => {
  const name = `${PREFIX}-govc`;
  govc([
    "vm.create",
    "-on=false",
    "-net",
    "VLAN-30",
    "-ds",
    DS,
    "-pool",
    `/${DC}/host/DC0_C0/Resources`,
    name,
  ]);
  // vcsim, like vCenter, may announce the new VM before its devices: the NIC can come in a
  // later update, which the cache must apply too.
  const ms = await waitFor(
    "cache sees the govc VM with its NIC",
    () => vc.findByName(name)[0]?.nics[0]?.portGroup === "VLAN-30",
  );
  t.diagnostic(`the cache saw the govc-created VM after ${ms} ms`);
  const before = vc.requestTotal();
  const vm = vc.findByName(name)[0]!;
  vc.vms();
  vc.get(vm.moRef);
  vc.findByOwnerUID("nobody");
  assert.equal(vc.requestTotal() - before, 0, "cache reads send no request");
  assert.equal(vc.findByName(name).length, 1);
  assert.equal(vm.ownerUID, undefined, "not ours");

  govc(["vm.power", "-on", name]);
  await waitFor("cache sees power on", () => vc.get(vm.moRef)?.powerState === "poweredOn");
  govc(["vm.destroy", name]);
  await waitFor("cache drops the destroyed VM", () => vc.get(vm.moRef) === undefined);
});

// --- recovery after a vCenter restart, on a private vcsim --------------------------------------

/** A VM made by someone else (govc) on the private vcsim. */
function govcCreate(name: string, env: Record<string, string>): void {
  govc(
    [
      "vm.create",
      "-on=false",
      "-net",
      "DC0_DVPG0",
      "-ds",
      DS,
      "-pool",
      `/${DC}/host/DC0_C0/Resources`,
      name,
    ],
    env,
  );
}

test("the update loop recovers when vCenter restarts and drops VMs that are gone", async (t) => {
  const vcsim = await privateVcsim();
  const { env, password } = vcsim;
  const startVcsim = () => vcsim.start();
  let proc: ChildProcess = await startVcsim();
  const priv = new VCenter({
    ...options({ url: env.GOVC_URL!, username: env.GOVC_USERNAME!, password }),
    maxWaitSeconds: 5,
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
  });
  try {
    await priv.start();
    const gone = `${PREFIX}-gone`;
    govcCreate(gone, env);
    await waitFor("private cache sees the VM", () => priv.findByName(gone).length === 1);

    proc.kill("SIGTERM");
    await once(proc, "exit");
    await waitFor("loop notices the outage", () => !priv.synced(), 10_000);
    assert.equal(priv.findByName(gone).length, 1, "stale entries are kept while vCenter is away");

    proc = await startVcsim();
    const ms = await waitFor(
      "loop resyncs with the new vcsim",
      () => priv.synced() && priv.findByName(gone).length === 0,
      20_000,
    );
    t.diagnostic(`resynced ${ms} ms after vcsim came back`);
    assert.ok(priv.cacheStats().resyncs >= 2);
    assert.equal(priv.findByName("DC0_C0_RP0_VM0").length, 1);

    const fresh = `${PREFIX}-fresh`;
    govcCreate(fresh, env);
    await waitFor("the new loop follows changes", () => priv.findByName(fresh).length === 1);
    // Operations work on the new session too.
    await priv.powerOn(priv.findByName(fresh)[0]!.moRef);
    assert.equal(priv.findByName(fresh)[0]?.powerState, "poweredOn");
  } finally {
    await priv.stop();
    proc.kill("SIGTERM");
    await once(proc, "exit").catch(() => undefined);
  }
});

// boot.method iso with boot.installerISO, through the operator against vcsim: "vendor" installer
// images built here with xorriso (a hybrid one with a BIOS El Torito entry and an EFI one, and a
// BIOS-only one; dummy payloads, the boot catalog is what matters) are uploaded with govc. An EFI
// server gets two CD-ROMs (the vendor image first, its OEMDRV kickstart ISO second) and boots
// CD first; the guest, played by test code, reads ks.cfg from the ISO on the datastore, fetches
// its keys, starts mcollectived and reports /built; after the handoff both drives are empty, the
// per-server ISO is deleted and the vendor image is still there. An image that cannot boot under
// the class's firmware, or that does not exist, is refused before any VM is created.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  getVS,
  installVsop,
  kubectl,
  kubectlTry,
  nodeDown,
  removeDNS,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer, virtualServerClass } from "../support/fixtures.js";
import { destroyVMs, findVMs, govc } from "../support/govc.js";
import {
  bootstrapURLIn,
  builtURLIn,
  callBuilt,
  installNode,
  readIsoFromDatastore,
} from "../support/installer.js";

const DS = "LocalDS_0";
const DIR = "isos-installer-e2e";
const HYBRID = `[${DS}] ${DIR}/vendor-hybrid.iso`;
const BIOS_ONLY = `[${DS}] ${DIR}/vendor-bios.iso`;
const MISSING = `[${DS}] ${DIR}/no-such-image.iso`;
const LABELS = { "vsop-test": "installer-iso" };
const EFI = "instiso-efi";
const BIOS = "instiso-bios";
const EFI_BIOS_IMAGE = "instiso-efi-biosimage";
const EFI_MISSING = "instiso-efi-missing";
const CLASSES = [EFI, BIOS, EFI_BIOS_IMAGE, EFI_MISSING];

const HOSTS: Record<string, string> = {
  "vend-prod-1.example.test": "10.12.30.131", // efi, hybrid image: installs and reaches Ready
  "vend-prod-2.example.test": "10.12.30.132", // efi, BIOS-only image: refused
  "vend-prod-3.example.test": "10.12.30.133", // missing image: refused
  "vend-prod-4.example.test": "10.12.30.134", // bios, hybrid image: deleted while installing
};

let ns: string;
let op: Operator;

interface InstallStatus {
  method?: string;
  completedAt?: string;
  iso?: string;
  installerISO?: string;
}
const install = (vs: VS | undefined) => (vs?.status?.install ?? {}) as InstallStatus;

interface GovcDeviceInfo {
  name: string;
  type: string;
  key: number;
  controllerKey?: number;
  unitNumber?: number;
  backing?: { fileName?: string };
  connectable?: { connected: boolean; startConnected: boolean };
}

/** The VM's CD-ROM drives in the order the firmware tries them (IDE controller, then unit). */
function cdroms(vmName: string): GovcDeviceInfo[] {
  const out = JSON.parse(govc(["device.info", "-vm", vmName, "-json"])) as {
    devices?: GovcDeviceInfo[];
  };
  return (out.devices ?? [])
    .filter((d) => d.type === "VirtualCdrom")
    .sort(
      (a, b) =>
        (a.controllerKey ?? 0) - (b.controllerKey ?? 0) ||
        (a.unitNumber ?? 0) - (b.unitNumber ?? 0),
    );
}

function ls(dir: string): string[] {
  try {
    return govc(["datastore.ls", "-ds", DS, dir])
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** A "vendor" image: a BIOS El Torito entry, and with `efi` an EFI alt entry as well. */
function vendorImage(dir: string, name: string, efi: boolean): string {
  const root = path.join(dir, `${name}-root`);
  mkdirSync(path.join(root, "boot"), { recursive: true });
  writeFileSync(path.join(root, "boot/bios.img"), Buffer.alloc(2048));
  writeFileSync(path.join(root, "boot/efi.img"), Buffer.alloc(64 * 1024));
  writeFileSync(path.join(root, "README"), `vsop e2e vendor image ${name}\n`);
  const out = path.join(dir, `${name}.iso`);
  const efiArgs = efi ? ["-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot"] : [];
  execFileSync(
    "xorriso",
    [
      ...["-as", "mkisofs", "-quiet", "-V", "VENDOR", "-o", out],
      ...["-b", "boot/bios.img", "-no-emul-boot", "-boot-load-size", "4"],
      ...efiArgs,
      root,
    ],
    { stdio: "ignore" },
  );
  return out;
}

const relPath = (dsPath: string) => dsPath.replace(/^\[[^\]]+\] /, "");

function removeLeftovers(): void {
  destroyVMs(Object.keys(HOSTS).map((host) => host.split(".")[0]!));
  for (const f of ls("vsop"))
    if (f.startsWith("vend-prod-")) govc(["datastore.rm", "-ds", DS, `vsop/${f}`]);
  if (ls(DIR).length) govc(["datastore.rm", "-ds", DS, DIR]);
}

before(() => {
  installVsop();
  removeLeftovers();
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-vendor-"));
  try {
    govc(["datastore.mkdir", "-ds", DS, "-p", DIR]);
    govc(["datastore.upload", "-ds", DS, vendorImage(dir, "hybrid", true), relPath(HYBRID)]);
    govc(["datastore.upload", "-ds", DS, vendorImage(dir, "bios", false), relPath(BIOS_ONLY)]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  ns = createNamespace("installer-iso");
  for (const [host, address] of Object.entries(HOSTS)) addDNS(address, host);
  applyClass(EFI, {
    boot: { method: "iso", installerISO: HYBRID },
    hardware: { firmware: "efi" },
  });
  applyClass(BIOS, {
    boot: { method: "iso", installerISO: HYBRID },
    hardware: { firmware: "bios" },
  });
  applyClass(EFI_BIOS_IMAGE, {
    boot: { method: "iso", installerISO: BIOS_ONLY },
    hardware: { firmware: "efi" },
  });
  applyClass(EFI_MISSING, {
    boot: { method: "iso", installerISO: MISSING },
    hardware: { firmware: "efi" },
  });
  op = startOperator("installer-iso", [
    "--label-selector",
    "vsop-test=installer-iso",
    "--resync-period",
    "2s",
  ]);
});

after(async () => {
  try {
    await deleteServers(ns, 120_000);
  } finally {
    assert.equal(await op.stop(), 0);
    nodeDown("vend-prod-1.example.test");
    kubectl(["delete", "virtualserverclass", ...CLASSES, "--ignore-not-found"]);
    kubectl(["delete", "namespace", ns, "--wait=false"]);
    for (const host of Object.keys(HOSTS)) removeDNS(host);
    if (ls(DIR).length) govc(["datastore.rm", "-ds", DS, DIR]);
  }
});

test("efi + hybrid image: two CD-ROMs (vendor image first, OEMDRV kickstart), CD boots first; install → Ready, both detached, only the per-server ISO deleted", async () => {
  const fqdn = "vend-prod-1.example.test";
  apply(virtualServer(ns, "hybrid", fqdn, EFI, LABELS));
  const vs = await waitForCondition(
    ns,
    "hybrid",
    "Installed",
    "False",
    "WaitingForInstall",
    90_000,
  );
  const own = install(vs).iso!;
  assert.equal(own, `[${DS}] vsop/vend-prod-1-${vs.metadata.uid.slice(0, 8)}.iso`);
  assert.equal(install(vs).installerISO, HYBRID);
  assert.equal(install(vs).method, "iso");

  // vSphere: EFI firmware, powered on, the vendor image in the first drive, CD-ROM first.
  const vm = findVMs("vend-prod-1")[0]!;
  assert.equal(vm.runtime.powerState, "poweredOn");
  const info = JSON.parse(govc(["vm.info", "-json", "vend-prod-1"])) as {
    virtualMachines: { config: { firmware: string } }[];
  };
  assert.equal(info.virtualMachines[0]!.config.firmware, "efi");
  const drives = cdroms("vend-prod-1");
  assert.deepEqual(
    drives.map((d) => d.backing?.fileName),
    [HYBRID, own],
    `the vendor image boots from the first drive: ${JSON.stringify(drives)}`,
  );
  for (const d of drives) assert.equal(d.connectable?.startConnected, true);
  const bootOrder = govc([
    "object.collect",
    "-dump",
    `VirtualMachine:${vm.self.value}`,
    "config.bootOptions.bootOrder",
  ]);
  assert.match(
    bootOrder,
    /^[^&]*&types\.VirtualMachineBootOptionsBootableCdromDevice/,
    "CD-ROM first",
  );

  // The guest: anaconda finds ks.cfg on the volume labelled OEMDRV.
  const files = readIsoFromDatastore(own);
  assert.equal(files[".volume-id"], "OEMDRV");
  const ks = files["ks.cfg"]!;
  assert.ok(ks, "the ISO carries ks.cfg");
  assert.equal(files["user-data"], undefined, "no cloud-init data beside the kickstart");
  assert.match(
    ks,
    /^network --device=\S+ --bootproto=static --ip=10\.12\.30\.131 --netmask=255\.255\.255\.0 .*--nodefroute/m,
  );
  assert.match(ks, /--hostname=vend-prod-1\.example\.test/);
  assert.doesNotMatch(ks, /--gateway|PRIVATE KEY|password/);
  assert.doesNotMatch(ks, /--bootproto=dhcp/, "no boot NIC");
  assert.match(ks, /^reboot --eject$/m, "the installer image is ejected at the end");
  // Without a boot NIC its calls to vsop go through the VLAN's proxy (proxy-30).
  assert.match(
    ks,
    /^curl -fsS .*--proxy 'http:\/\/10\.12\.30\.2:3128' -X POST '\S+\/built\/\S+'$/m,
  );
  const bootstrap = bootstrapURLIn(ks);
  const built = builtURLIn(ks);
  assert.ok(built.startsWith(`http://127.0.0.1:${op.provisioningPort}/built/`));

  // As the kickstart's %post does: keys, then /built, before the installed system's mcollectived.
  await installNode(fqdn, bootstrap, "default.pp", {
    beforeStart: async () => assert.equal(await callBuilt(built), 204),
  });
  await waitForCondition(ns, "hybrid", "Installed", "True", "Installed", 60_000);
  const ready = await waitForCondition(ns, "hybrid", "Ready", "True", undefined, 180_000);
  assert.equal(ready.status?.phase, "Ready");

  await assertHandedOff("hybrid", "vend-prod-1");
  firstToken = built.split("/").pop()!;
});

/** After the install: both drives empty, the per-server ISO deleted, the vendor images kept. */
async function assertHandedOff(name: string, vmName: string): Promise<void> {
  const handedOff = await waitFor(
    "both ISOs detached and out of status",
    () => {
      const v = getVS(ns, name);
      const i = install(v);
      return i.iso === undefined && i.installerISO === undefined && v;
    },
    60_000,
  );
  assert.ok(install(handedOff).completedAt);
  const drives = cdroms(vmName);
  assert.equal(drives.length, 2, "the two drives stay, empty");
  for (const d of drives) assert.ok(!d.backing?.fileName, `an empty drive: ${JSON.stringify(d)}`);
  assert.ok(!ls("vsop").some((f) => f.startsWith(`${vmName}-`)), "the per-server ISO is deleted");
  assert.deepEqual(ls(DIR).sort(), ["vendor-bios.iso", "vendor-hybrid.iso"], "vendor images kept");
  assert.equal(findVMs(vmName)[0]!.runtime.powerState, "poweredOn");
}

let firstToken = "";

test("rebuild: the same VM's two empty drives get the vendor image and a new OEMDRV kickstart again; handed off again", async () => {
  assert.ok(firstToken, "the first install ran");
  const moRef = findVMs("vend-prod-1")[0]!.self.value;
  const request = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  kubectl([
    ...["-n", ns, "patch", "vsrv", "hybrid", "--type=merge", "-p"],
    JSON.stringify({ spec: { rebuildRequestedAt: request } }),
  ]);
  const installing = await waitFor(
    "the rebuilt server installing from the CD-ROMs",
    () => {
      const v = getVS(ns, "hybrid");
      const rebuild = v?.status?.rebuild as { reinstallStartedAt?: string } | undefined;
      return cond(v, "Installed")?.reason === "WaitingForInstall" &&
        rebuild?.reinstallStartedAt &&
        install(v).iso
        ? v
        : undefined;
    },
    120_000,
  );
  const own = install(installing).iso!;
  assert.equal(install(installing).installerISO, HYBRID);
  const drives = cdroms("vend-prod-1");
  assert.deepEqual(
    drives.map((d) => d.backing?.fileName),
    [HYBRID, own],
    "the same two drives, refilled",
  );
  assert.equal(findVMs("vend-prod-1")[0]!.self.value, moRef, "the same VM");
  const ks = readIsoFromDatastore(own)["ks.cfg"]!;
  const built = builtURLIn(ks);
  assert.notEqual(built.split("/").pop(), firstToken, "a new install token");
  await installNode("vend-prod-1.example.test", bootstrapURLIn(ks), "default.pp", {
    beforeStart: async () => assert.equal(await callBuilt(built), 204),
  });
  await waitFor(
    "the rebuild completed",
    () =>
      (getVS(ns, "hybrid")?.status?.rebuild as { completedAt?: string } | undefined)?.completedAt,
    120_000,
  );
  await assertHandedOff("hybrid", "vend-prod-1");
});

test("the API server refuses installerISO with another boot method, or not a datastore path to an .iso", () => {
  for (const [boot, message] of [
    [{ method: "network", installerISO: HYBRID }, /boot.installerISO needs boot.method iso/],
    [{ method: "iso", installerISO: "isos/vendor.iso" }, /installerISO/],
    [{ method: "iso", installerISO: `[${DS}] ${DIR}/vendor.img` }, /installerISO/],
  ] as const) {
    const r = kubectlTry(
      ["apply", "--dry-run=server", "-f", "-"],
      JSON.stringify(virtualServerClass("instiso-refused", { boot })),
    );
    assert.equal(r.ok, false, JSON.stringify(boot));
    assert.match(r.out, message);
  }
});

test("efi + BIOS-only image → InstallerISONotBootable naming the firmware and the image's platforms; no VM", async () => {
  apply(virtualServer(ns, "biosimg", "vend-prod-2.example.test", EFI_BIOS_IMAGE, LABELS));
  const vs = await waitForCondition(
    ns,
    "biosimg",
    "Ready",
    "False",
    "InstallerISONotBootable",
    60_000,
  );
  const msg = cond(vs, "Ready")!.message;
  assert.ok(msg.includes(BIOS_ONLY), msg);
  assert.match(msg, /efi firmware/);
  assert.match(msg, /entries for x86 BIOS only/);
  assert.match(msg, /nothing was created/);
  assert.equal(cond(vs, "VMCreated")?.reason, "InstallerISONotBootable");
  await waitFor("InstallerISONotBootable event", () =>
    events(ns, "biosimg").find(
      (e) => e.reason === "InstallerISONotBootable" && e.type === "Warning",
    ),
  );
  assert.equal(findVMs("vend-prod-2").length, 0, "no VM created");
  assert.equal(vs.status?.vm, undefined, "no VM asked for");
  assert.ok(!ls("vsop").some((f) => f.startsWith("vend-prod-2-")), "no ISO uploaded");
});

test("a missing image → InstallerISONotFound; no VM", async () => {
  apply(virtualServer(ns, "missing", "vend-prod-3.example.test", EFI_MISSING, LABELS));
  const vs = await waitForCondition(
    ns,
    "missing",
    "Ready",
    "False",
    "InstallerISONotFound",
    60_000,
  );
  const msg = cond(vs, "Ready")!.message;
  assert.ok(msg.includes(MISSING), msg);
  assert.match(msg, /does not exist in datacenter DC0/);
  assert.equal(findVMs("vend-prod-3").length, 0, "no VM created");
});

test("bios + hybrid image, deleted while installing: VM destroyed, per-server ISO deleted, vendor image kept", async () => {
  apply(virtualServer(ns, "gone", "vend-prod-4.example.test", BIOS, LABELS));
  const vs = await waitForCondition(ns, "gone", "Installed", "False", "WaitingForInstall", 90_000);
  const own = install(vs).iso!;
  assert.equal(install(vs).installerISO, HYBRID);
  assert.deepEqual(
    cdroms("vend-prod-4").map((d) => d.backing?.fileName),
    [HYBRID, own],
  );
  assert.ok(ls("vsop").includes(relPath(own).replace("vsop/", "")));

  kubectl(["-n", ns, "delete", "vsrv", "gone", "--wait=false"]);
  await waitFor("object released", () => getVS(ns, "gone") === undefined, 90_000);
  assert.equal(findVMs("vend-prod-4").length, 0, "VM destroyed");
  assert.ok(!ls("vsop").some((f) => f.startsWith("vend-prod-4-")), "per-server ISO deleted");
  assert.deepEqual(ls(DIR).sort(), ["vendor-bios.iso", "vendor-hybrid.iso"], "vendor images kept");
});

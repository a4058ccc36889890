// The provisioning handoff through the operator, the guest played by test code: a per-server
// cidata ISO on a CD-ROM (read back from the vcsim datastore with govc and xorriso), cloud-init
// data in guestinfo, the /built callback, and what must happen when things go wrong (template
// errors, a refused datastore upload, an install that never finishes, a server deleted while
// it installs). Every vSphere outcome is checked with govc.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as yaml from "js-yaml";
import { assertNoDefaultRoute } from "../../src/provision/network-config.js";
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
  metric,
  OPERATOR_NS,
  removeDNS,
  scrape,
  startOperator,
  tryGetJSON,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { extraConfig, findVMs, govc, nics, portGroupNames, destroyVMs } from "../support/govc.js";
import { TcpProxy, throughPort } from "../support/proxy.js";
import {
  bootstrapFiles,
  bootstrapURLIn,
  builtURLIn,
  callBuilt,
  fetchBootstrap,
  installRecord,
  newInstallerNonce,
  fetchKickstart,
  readGuestinfo,
  readIsoFromDatastore,
} from "../support/installer.js";

const DS = "LocalDS_0";
const LABELS = { "vsop-test": "install" };
const ISO = "install-iso";
const GUESTINFO = "install-guestinfo";
const BAD_ISO = "install-badtpl-iso";
const BAD_NET = "install-badtpl-network";
const UPLOAD = "install-upload";
const TIMEOUT = "install-timeout";
const CLASSES = [ISO, GUESTINFO, BAD_ISO, BAD_NET, UPLOAD, TIMEOUT];
const TEMPLATES = "install-bad-templates";

const HOSTS: Record<string, string> = {
  "inst-prod-1.example.test": "10.12.30.121", // iso
  "inst-prod-2.example.test": "10.12.30.122", // guestinfo
  "inst-prod-3.example.test": "10.12.30.123", // bad user-data template
  "inst-prod-4.example.test": "10.12.30.124", // bad kickstart template
  "inst-prod-5.example.test": "10.12.30.125", // upload refused
  "inst-prod-6.example.test": "10.12.30.126", // install timeout
  "inst-prod-7.example.test": "10.12.30.127", // deleted while installing
};

// Line 4 uses a variable that does not exist.
const BAD_USER_DATA = `#cloud-config
hostname: "{{shortName}}"
fqdn: "{{hostname}}"
ntp: { enabled: true, servers: ["{{services.ntpServer}}"] }
`;
const GOOD_USER_DATA = `#cloud-config
hostname: "{{shortName}}"
fqdn: "{{hostname}}"
ntp: { enabled: true, servers: ["{{services.ntp}}"] }
final_message: "custom template for {{hostname}}"
`;
// Line 3 asks for a gateway, which no server has.
const BAD_KICKSTART = `# kickstart for {{hostname}}
text
network --device={{nic.device}} --bootproto=static --ip={{address}} --gateway={{gateway}}
`;

let ns: string;
let op: Operator;

interface InstallStatus {
  method?: string;
  startedAt?: string;
  completedAt?: string;
  iso?: string;
}
const install = (vs: VS | undefined) => (vs?.status?.install ?? {}) as InstallStatus;

interface GovcDeviceInfo {
  name: string;
  type: string;
  key: number;
  backing?: { fileName?: string };
  connectable?: { connected: boolean; startConnected: boolean };
}

function cdroms(vmName: string): GovcDeviceInfo[] {
  const out = JSON.parse(govc(["device.info", "-vm", vmName, "-json"])) as {
    devices?: GovcDeviceInfo[];
  };
  return (out.devices ?? []).filter((d) => d.type === "VirtualCdrom");
}

/** File names in the datastore's vsop/ directory (none when the directory does not exist). */
function isoFiles(): string[] {
  try {
    return govc(["datastore.ls", "-ds", DS, "vsop"])
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

const relPath = (dsPath: string) => dsPath.replace(/^\[[^\]]+\] /, "");

/** `cloud-init schema --config-file`, as Debian's cloud-init runs it. */
function cloudInitSchema(userData: string): { code: number; out: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-schema-"));
  try {
    const file = path.join(dir, "user-data");
    writeFileSync(file, userData);
    try {
      const out = execFileSync("cloud-init", ["schema", "--config-file", file], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
      return { code: 0, out };
    } catch (err) {
      const e = err as { status?: number; stdout?: string; stderr?: string };
      return { code: e.status ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface CloudConfig {
  hostname?: string;
  fqdn?: string;
  ntp?: { servers?: string[] };
  apt?: { http_proxy?: string };
  write_files?: { path: string; encoding?: string; content: string }[];
  runcmd?: unknown[];
}

function writtenFile(cfg: CloudConfig, file: string): string {
  const f = cfg.write_files?.find((w) => w.path === file);
  assert.ok(f, `user-data writes ${file}`);
  return f.encoding === "b64" ? Buffer.from(f.content, "base64").toString("utf8") : f.content;
}

/** The user-data checks every boot method shares; returns the /built URL it carries. */
async function checkUserData(
  userData: string,
  fqdn: string,
  nonce = newInstallerNonce(),
): Promise<string> {
  const schema = cloudInitSchema(userData);
  assert.equal(schema.code, 0, `cloud-init schema accepts the user-data:\n${schema.out}`);
  assert.ok(userData.startsWith("#cloud-config\n"));
  const cfg = yaml.load(userData) as CloudConfig;
  assert.equal(cfg.hostname, fqdn.split(".")[0]);
  assert.equal(cfg.fqdn, fqdn);
  assert.deepEqual(cfg.ntp?.servers, ["10.12.30.3"], "ntp-30");
  assert.equal(cfg.apt?.http_proxy, "http://10.12.30.2:3128", "proxy-30");
  // The data outlives the install (on the datastore, in vCenter's history): no key, no login.
  assert.doesNotMatch(userData, /PRIVATE KEY|password/);
  assert.ok(!(cfg.write_files ?? []).some((f) => f.path.startsWith("/etc/mcollective")));
  assert.match(writtenFile(cfg, "/etc/puppet/puppet.conf"), /^environment = production$/m);
  // The installing system fetches those once.
  const bootstrap = bootstrapURLIn(userData);
  const first = await waitFor("the key bundle", async () => {
    const r = await fetchBootstrap(bootstrap, { nonce });
    return r.status === 503 ? undefined : r;
  });
  assert.equal(first.status, 200);
  const files = bootstrapFiles(first.body);
  const serverCfg = files["/etc/mcollective/server.cfg"] ?? "";
  assert.match(serverCfg, new RegExp(`^identity = ${fqdn.replaceAll(".", "\\.")}$`, "m"));
  assert.match(serverCfg, /^securityprovider = ssl$/m);
  assert.match(files["/etc/mcollective/ssl/server_private.pem"] ?? "", /BEGIN/);
  assert.match(files["/etc/mcollective/vsop/identity.pem"] ?? "", /BEGIN PRIVATE KEY/);
  assert.equal((await fetchBootstrap(bootstrap)).status, 410, "the key bundle is served once");
  assert.equal(
    (await fetchBootstrap(bootstrap, { nonce: newInstallerNonce() })).status,
    410,
    "to one installer",
  );
  // That installer, had it lost the answer, gets the same bundle again.
  const again = await fetchBootstrap(bootstrap, { nonce });
  assert.equal(again.status, 200);
  assert.equal(
    bootstrapFiles(again.body)["/etc/mcollective/vsop/identity.pem"],
    files["/etc/mcollective/vsop/identity.pem"],
    "the same identity key",
  );
  const url = builtURLIn(userData);
  assert.ok(
    url.startsWith(`http://127.0.0.1:${op.provisioningPort}/built/`),
    "the callback points at this operator's provisioning server",
  );
  return url;
}

/** The network-config checks every boot method shares. */
function checkNetworkConfig(networkConfig: string, address: string, mac: string): void {
  assert.doesNotThrow(() => assertNoDefaultRoute(networkConfig), "no default route");
  assert.doesNotMatch(networkConfig, /gateway|0\.0\.0\.0\/0/);
  const net = yaml.load(networkConfig) as {
    version: number;
    ethernets: Record<
      string,
      {
        match?: { macaddress?: string };
        dhcp4?: boolean;
        addresses?: string[];
        nameservers?: { addresses?: string[] };
      }
    >;
  };
  assert.equal(net.version, 2);
  const eths = Object.values(net.ethernets);
  assert.equal(eths.length, 1, "one interface: the service NIC");
  const eth = eths[0]!;
  assert.deepEqual(eth.addresses, [`${address}/24`]);
  assert.equal(eth.dhcp4, false);
  assert.deepEqual(eth.nameservers?.addresses, ["10.12.30.4"], "dns-30");
  assert.equal(eth.match?.macaddress, mac.toLowerCase(), "matched by the VM's NIC MAC");
}

/**
 * Warnings the install path must not produce on a good run, its first reconcile included (that
 * one renders before the server's status was ever written).
 */
function assertNoInstallWarnings(name: string): void {
  const bad = events(ns, name).filter(
    (e) =>
      e.type === "Warning" &&
      ["TemplateError", "DatastoreUploadFailed", "InternalError"].includes(e.reason),
  );
  assert.deepEqual(bad, [], "no install warnings on the way");
}

function secretExists(uid: string): boolean {
  return kubectlTry(["-n", OPERATOR_NS, "get", "secret", `vsop-install-${uid}`]).ok;
}

/** Leftovers of an interrupted earlier run: our VMs by name and our ISOs. */
function removeLeftovers(): void {
  destroyVMs(Object.keys(HOSTS).map((host) => host.split(".")[0]!));
  for (const f of isoFiles())
    if (f.startsWith("inst-prod-")) govc(["datastore.rm", "-ds", DS, `vsop/${f}`]);
}

before(() => {
  installVsop();
  removeLeftovers();
  ns = createNamespace("install");
  for (const [host, address] of Object.entries(HOSTS)) addDNS(address, host);
  apply({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: TEMPLATES, namespace: OPERATOR_NS },
    data: { "user-data": BAD_USER_DATA, kickstart: BAD_KICKSTART },
  });
  applyClass(ISO, { boot: { method: "iso" } });
  applyClass(GUESTINFO, { boot: { method: "guestinfo" } });
  applyClass(BAD_ISO, { boot: { method: "iso", templatesConfigMap: TEMPLATES } });
  applyClass(BAD_NET, { boot: { method: "network", templatesConfigMap: TEMPLATES } });
  applyClass(TIMEOUT, { boot: { method: "guestinfo", installTimeout: "5s" } });
  kubectlTry(["delete", "virtualserverclass", UPLOAD, "--ignore-not-found"]);
  op = startOperator("install", ["--label-selector", "vsop-test=install", "--resync-period", "2s"]);
});

after(async () => {
  try {
    await deleteServers(ns, 120_000);
  } finally {
    assert.equal(await op.stop(), 0);
    kubectl(["delete", "virtualserverclass", ...CLASSES, "--ignore-not-found"]);
    kubectl(["-n", OPERATOR_NS, "delete", "configmap", TEMPLATES, "--ignore-not-found"]);
    kubectl(["delete", "namespace", ns, "--wait=false"]);
    for (const host of Object.keys(HOSTS)) removeDNS(host);
  }
});

test("iso: a per-server cidata ISO on the CD-ROM, no boot NIC; /built → ISO detached and deleted", async () => {
  apply(virtualServer(ns, "iso", "inst-prod-1.example.test", ISO, LABELS));
  const vs = await waitForCondition(ns, "iso", "Installed", "False", "WaitingForInstall", 90_000);
  assert.equal(vs.status?.phase, "Installing");
  const uid = vs.metadata.uid;
  const isoPath = install(vs).iso!;
  assert.equal(isoPath, `[${DS}] vsop/inst-prod-1-${uid.slice(0, 8)}.iso`);
  assert.equal(install(vs).method, "iso");
  assert.ok(secretExists(uid), "the token Secret exists");

  // vSphere: one NIC in VLAN-30 (no boot NIC), powered on, booting from the ISO's CD-ROM.
  const vm = findVMs("inst-prod-1")[0]!;
  assert.equal(vm.runtime.powerState, "poweredOn");
  const pg = portGroupNames();
  const vmNics = nics(vm);
  assert.deepEqual(
    vmNics.map((n) => pg[n.backing!.port!.portgroupKey]),
    ["VLAN-30"],
    "one NIC, in the server's VLAN",
  );
  const drives = cdroms("inst-prod-1");
  const drive = drives.find((d) => d.backing?.fileName === isoPath);
  assert.ok(drive, `a CD-ROM carries ${isoPath}: ${JSON.stringify(drives)}`);
  assert.equal(drive.connectable?.startConnected, true);
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
  assert.ok(
    isoFiles().includes(relPath(isoPath).replace("vsop/", "")),
    "the ISO is on the datastore",
  );

  // The guest: read the ISO from the datastore, as the VM's firmware would.
  const files = readIsoFromDatastore(isoPath);
  assert.equal(files[".volume-id"], "cidata");
  const url = await checkUserData(files["user-data"]!, "inst-prod-1.example.test");
  const meta = yaml.load(files["meta-data"]!) as Record<string, string>;
  assert.equal(meta["instance-id"], uid);
  assert.equal(meta["local-hostname"], "inst-prod-1.example.test");
  checkNetworkConfig(files["network-config"]!, "10.12.30.121", vmNics[0]!.macAddress!);

  assert.equal(await callBuilt(url), 204);
  assert.equal(await callBuilt(url), 410, "a used token is gone");
  assert.equal(await callBuilt(url.replace("/built/", "/ks/")), 405, "/ks takes GET only");
  assert.equal((await fetchKickstart(op.provisioningPort, url.split("/").pop()!)).status, 410);

  const done = await waitForCondition(ns, "iso", "Installed", "True", "Installed", 60_000);
  assert.ok(install(done).completedAt);
  await waitFor(
    "ISO detached and removed from status",
    () => {
      const v = getVS(ns, "iso");
      return install(v).iso === undefined && v;
    },
    60_000,
  );
  for (const d of cdroms("inst-prod-1"))
    assert.ok(!d.backing?.fileName, `no ISO backing left: ${JSON.stringify(d)}`);
  assert.ok(!isoFiles().some((f) => f.startsWith("inst-prod-1-")), "the ISO is deleted");
  assert.equal(findVMs("inst-prod-1")[0]!.runtime.powerState, "poweredOn");
  assert.ok(!op.logs().includes(url.split("/").pop()!), "the token is never logged");
  assertNoInstallWarnings("iso");
});

test("guestinfo: cloud-init data in extraConfig; /built → Installed, guestinfo cleared", async () => {
  apply(virtualServer(ns, "gi", "inst-prod-2.example.test", GUESTINFO, LABELS));
  const vs = await waitForCondition(ns, "gi", "Installed", "False", "WaitingForInstall", 90_000);
  assert.equal(vs.status?.phase, "Installing");
  const vm = findVMs("inst-prod-2")[0]!;
  assert.equal(vm.runtime.powerState, "poweredOn");
  const ec = extraConfig(vm);
  assert.equal(ec["guestinfo.userdata.encoding"], "base64");
  assert.equal(ec["guestinfo.metadata.encoding"], "base64");
  const vmNics = nics(vm);
  assert.equal(vmNics.length, 1, "no boot NIC");
  assert.ok(
    !cdroms("inst-prod-2").some((d) => d.backing?.fileName),
    "no ISO for a guestinfo install",
  );

  const gi = readGuestinfo("inst-prod-2");
  // The installer's first key fetch is answered after the keys were recorded, but the answer is
  // lost on the way (as when the operator is killed mid-answer); its retry, with the same nonce,
  // must get those keys rather than a 410.
  const nonce = newInstallerNonce();
  const lossy = await new TcpProxy(() => [op.provisioningPort]).start();
  lossy.holdNewReplies = true;
  const lossyURL = throughPort(bootstrapURLIn(gi.userData), lossy.port);
  try {
    await waitFor("keys recorded for a fetch whose answer was lost", async () => {
      const lost = await fetchBootstrap(lossyURL, { nonce, timeoutMs: 3000 }).then(
        (r) => `answered ${r.status}`,
        (err: Error) => err.message,
      );
      // A 503 (not ready yet) comes through the proxy no more than a 200 would: try again.
      assert.match(lost, /no answer/, "the answer is lost");
      return installRecord(vs.metadata.uid).keysFetchedAt;
    });
  } finally {
    await lossy.close();
  }
  const before = op.logs().length;
  const url = await checkUserData(gi.userData, "inst-prod-2.example.test", nonce);
  assert.match(op.logs().slice(before), /install keys handed out again/);
  assert.equal(gi.metadata["instance-id"], vs.metadata.uid);
  assert.equal(gi.metadata["local-hostname"], "inst-prod-2.example.test");
  assert.equal(gi.metadata["network.encoding"], "base64");
  const networkConfig = Buffer.from(gi.metadata.network!, "base64").toString("utf8");
  checkNetworkConfig(networkConfig, "10.12.30.122", vmNics[0]!.macAddress!);
  // The keys wait sealed for their installer's retry; nothing in the record opens them.
  const sealed = installRecord(vs.metadata.uid).keysSealed ?? "";
  assert.ok(sealed.length > 100, "the handed-out keys are sealed in the install record");
  assert.doesNotMatch(Buffer.from(sealed, "base64").toString("latin1"), /PRIVATE KEY|BEGIN/);

  assert.equal(await callBuilt(url), 204);
  await waitForCondition(ns, "gi", "Installed", "True", "Installed", 60_000);
  const spent = installRecord(vs.metadata.uid);
  assert.equal(spent.keysSealed, undefined, "the sealed keys go with the spent token");
  assert.equal(spent.token, undefined);
  await waitFor(
    "guestinfo install data cleared",
    () => {
      const left = Object.keys(extraConfig(findVMs("inst-prod-2")[0]!)).filter((k) =>
        k.startsWith("guestinfo."),
      );
      return left.length === 0;
    },
    60_000,
  );
  assert.equal(extraConfig(findVMs("inst-prod-2")[0]!)["vsop.owner-uid"], vs.metadata.uid);
  assertNoInstallWarnings("gi");
  assert.equal(await callBuilt(url), 410);
});

test("tokens: unknown or malformed tokens are 404, on both routes", async () => {
  const base = `http://127.0.0.1:${op.provisioningPort}`;
  assert.equal(await callBuilt(`${base}/built/${"A".repeat(43)}`), 404);
  assert.equal((await fetchKickstart(op.provisioningPort, "B".repeat(43))).status, 404);
  assert.equal(await callBuilt(`${base}/built/not-a-token`), 404);
  assert.equal(await callBuilt(`${base}/built/`), 404);
});

test("template with an undefined variable (user-data, iso) → TemplateError naming it and the line; fixed → install goes on", async () => {
  apply(virtualServer(ns, "badiso", "inst-prod-3.example.test", BAD_ISO, LABELS));
  const vs = await waitForCondition(ns, "badiso", "Ready", "False", "TemplateError", 90_000);
  const msg = cond(vs, "Ready")!.message;
  assert.match(msg, /"user-data"/);
  assert.match(msg, new RegExp(TEMPLATES));
  assert.match(msg, /line 4/);
  assert.match(msg, /services\.ntpServer/);
  assert.equal(cond(vs, "Installed")?.reason, "TemplateError");
  const vm = findVMs("inst-prod-3")[0]!;
  assert.equal(vm.runtime.powerState, "poweredOff", "not started without its install data");
  assert.ok(!isoFiles().some((f) => f.startsWith("inst-prod-3-")), "no ISO uploaded");
  await waitFor("TemplateError event", () =>
    events(ns, "badiso").find((e) => e.reason === "TemplateError" && e.type === "Warning"),
  );

  // Fixing the ConfigMap is enough: vsop retries and the ISO carries the class's own template.
  apply({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: TEMPLATES, namespace: OPERATOR_NS },
    data: { "user-data": GOOD_USER_DATA, kickstart: BAD_KICKSTART },
  });
  const fixed = await waitForCondition(
    ns,
    "badiso",
    "Installed",
    "False",
    "WaitingForInstall",
    60_000,
  );
  const files = readIsoFromDatastore(install(fixed).iso!);
  assert.match(files["user-data"]!, /custom template for inst-prod-3\.example\.test/);
  assert.equal(cloudInitSchema(files["user-data"]!).code, 0);
  assert.doesNotThrow(() => assertNoDefaultRoute(files["network-config"]!));
});

test("template with an undefined variable (kickstart, network) → TemplateError naming it and the line", async () => {
  apply(virtualServer(ns, "badks", "inst-prod-4.example.test", BAD_NET, LABELS));
  const vs = await waitForCondition(ns, "badks", "Ready", "False", "TemplateError", 90_000);
  const msg = cond(vs, "Ready")!.message;
  assert.match(msg, /"kickstart"/);
  assert.match(msg, new RegExp(TEMPLATES));
  assert.match(msg, /line 3/);
  assert.match(msg, /"gateway"/);
  assert.equal(cond(vs, "Installed")?.reason, "TemplateError");
  assert.equal(
    findVMs("inst-prod-4")[0]!.runtime.powerState,
    "poweredOff",
    "not booted into an installer that would fetch a broken kickstart",
  );
});

test("datastore upload refused → DatastoreUploadFailed, and vsop retries until it succeeds", async () => {
  // The class comes last, so the ISO's name (it carries the object's UID) is known before vsop
  // tries: a directory in its place makes vcsim's /folder handler refuse the upload (HTTP 500).
  apply(virtualServer(ns, "upload", "inst-prod-5.example.test", UPLOAD, LABELS));
  const pending = await waitForCondition(ns, "upload", "Ready", "False", "ClassNotFound", 60_000);
  const target = `vsop/inst-prod-5-${pending.metadata.uid.slice(0, 8)}.iso`;
  govc(["datastore.mkdir", "-ds", DS, "-p", target]);
  try {
    applyClass(UPLOAD, { boot: { method: "iso" } });
    const vs = await waitForCondition(
      ns,
      "upload",
      "Ready",
      "False",
      "DatastoreUploadFailed",
      90_000,
    );
    const msg = cond(vs, "Ready")!.message;
    assert.match(msg, /Uploading to the datastore failed/);
    assert.ok(msg.includes(`[${DS}] ${target}`), msg);
    assert.match(msg, /HTTP 500/);
    assert.match(msg, /retries/);
    assert.equal(cond(vs, "Installed")?.reason, "DatastoreUploadFailed");
    assert.equal(findVMs("inst-prod-5")[0]!.runtime.powerState, "poweredOff");
    assert.ok(!cdroms("inst-prod-5").some((d) => d.backing?.fileName));
    // It is retried with backoff, not given up: more upload attempts follow.
    const attempts = async () =>
      metric((await scrape(op.metricsPort)).body, "vsop_vsphere_soap_requests_total", {
        method: "DatastoreFileUpload",
      });
    const before = await attempts();
    await waitFor("a retried upload", async () => (await attempts()) >= before + 2, 30_000);
    assert.equal(cond(getVS(ns, "upload"), "Ready")?.reason, "DatastoreUploadFailed");
  } finally {
    govc(["datastore.rm", "-ds", DS, target]);
  }
  const ok = await waitForCondition(
    ns,
    "upload",
    "Installed",
    "False",
    "WaitingForInstall",
    60_000,
  );
  assert.equal(install(ok).iso, `[${DS}] ${target}`);
  assert.ok(cdroms("inst-prod-5").some((d) => d.backing?.fileName === install(ok).iso));
  assert.equal(readIsoFromDatastore(install(ok).iso!)[".volume-id"], "cidata");
});

test("install never completes → InstallTimedOut; a late /built still counts", async () => {
  apply(virtualServer(ns, "slow", "inst-prod-6.example.test", TIMEOUT, LABELS));
  const vs = await waitForCondition(ns, "slow", "Ready", "False", "InstallTimedOut", 90_000);
  assert.match(cond(vs, "Ready")!.message, /inst-prod-6\.example\.test/);
  assert.match(cond(vs, "Ready")!.message, /5s/);
  assert.equal(cond(vs, "Installed")?.status, "False");
  assert.equal(cond(vs, "Installed")?.reason, "InstallTimedOut");
  assert.ok(!install(vs).completedAt);
  assert.equal(
    findVMs("inst-prod-6")[0]!.runtime.powerState,
    "poweredOn",
    "the VM is left running",
  );
  await waitFor("InstallTimedOut event", () =>
    events(ns, "slow").find((e) => e.reason === "InstallTimedOut" && e.type === "Warning"),
  );

  const url = builtURLIn(readGuestinfo("inst-prod-6").userData);
  assert.equal(await callBuilt(url), 204);
  await waitForCondition(ns, "slow", "Installed", "True", "Installed", 60_000);
  await waitFor(
    "guestinfo cleared after the late install",
    () => !extraConfig(findVMs("inst-prod-6")[0]!)["guestinfo.userdata"],
    60_000,
  );
});

test("deleted while installing (iso): VM destroyed, ISO deleted, token Secret deleted", async () => {
  apply(virtualServer(ns, "gone", "inst-prod-7.example.test", ISO, LABELS));
  const vs = await waitForCondition(ns, "gone", "Installed", "False", "WaitingForInstall", 90_000);
  const uid = vs.metadata.uid;
  const iso = install(vs).iso!;
  const file = relPath(iso).replace("vsop/", "");
  assert.ok(isoFiles().includes(file), "the ISO is on the datastore");
  assert.ok(secretExists(uid), "the token Secret exists");
  assert.equal(findVMs("inst-prod-7").length, 1);

  kubectl(["-n", ns, "delete", "vsrv", "gone", "--wait=false"]);
  await waitFor("object released", () => getVS(ns, "gone") === undefined, 90_000);
  assert.equal(findVMs("inst-prod-7").length, 0, "VM destroyed");
  assert.ok(!isoFiles().includes(file), "ISO deleted from the datastore");
  assert.ok(!secretExists(uid), "token Secret deleted");
  assert.equal(tryGetJSON(["-n", OPERATOR_NS, "get", "secret", `vsop-install-${uid}`]), undefined);
});

// vSphere faults end to end through the operator, outcomes checked with govc: refused logins
// without a login storm, a CA that does not match, missing port groups and placement objects, a
// VM name taken by a foreign VM, the operator killed right after CreateVM_Task, and a vCenter
// (a private vcsim) that goes away in the middle of an install and comes back empty.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import { once } from "node:events";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
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
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import {
  mcollectiveSecrets,
  vcenterSecret,
  virtualServer,
  virtualServerClass,
} from "../support/fixtures.js";
import { extraConfig, findVMs, govc, nics, portGroupNames, type GovcVM } from "../support/govc.js";
import { stackEnv } from "../support/env.js";
import { privateVcsim } from "../support/vcsim.js";

const LABELS = { "vsop-test": "faults" };
const KILL_LABELS = { "vsop-test": "faults-kill" };
const BADPW_SECRET = "faults-vcsim-badpw";
const PRIVATE_SECRET = "faults-private-vcsim";
const WRONG_PASSWORD = `wrong-${randomBytes(6).toString("hex")}`;
const GUESTINFO = { boot: { method: "guestinfo", assumeInstalled: true } };
const KUBE_CA = () => readFileSync(stackEnv("VSOP_KUBE_CA"), "utf8");
const SENTENCE = /^\S.{20,}\.$/;

/** Every server of this file: flt-prod-<n>.example.test at 10.12.30.<n> (VLAN 45 for one). */
const HOSTS: Record<number, string> = {
  71: "10.12.30.71",
  72: "10.12.30.72",
  73: "10.12.30.73",
  74: "10.12.30.74",
  // VLAN 45, not 40: naming.test.ts needs the VLAN-40 service names to stay missing.
  75: "10.12.45.75",
  76: "10.12.30.76",
  77: "10.12.30.77",
  78: "10.12.30.78",
  79: "10.12.30.79",
  80: "10.12.30.80",
  81: "10.12.30.81",
  82: "10.12.30.82",
  83: "10.12.30.83",
  84: "10.12.30.84",
  85: "10.12.30.85",
};
const SERVICES_45: Record<string, string> = {
  "proxy-45.example.test": "10.12.45.2",
  "ntp-45.example.test": "10.12.45.3",
  "dns-45.example.test": "10.12.45.4",
};
const hostname = (n: number) => `flt-prod-${n}.example.test`;
const vmName = (n: number) => `flt-prod-${n}`;

const CLASSES: Record<string, Record<string, unknown>> = {
  "faults-ok": GUESTINFO,
  "faults-badpw": { ...GUESTINFO, vcenter: { credentialsSecret: BADPW_SECRET } },
  "faults-net": {}, // network install
  "faults-nobootpg": { network: { bootPortGroup: "Boot-Nope" } }, // boot method network
  "faults-nods": { ...GUESTINFO, placement: { datastore: "LocalDS_nope" } },
  "faults-nofolder": { ...GUESTINFO, placement: { folder: "faults-nope" } },
  "faults-nopool": { ...GUESTINFO, placement: { resourcePool: "faults-nope" } },
  "faults-nocluster": { ...GUESTINFO, placement: { cluster: "DC0_Cnope" } },
};

let ns: string;
let op: Operator;

function destroyLeftovers(env: Record<string, string> = {}): void {
  for (const p of govc(["find", "/", "-type", "m", "-name", "flt-prod-*"], env).split("\n"))
    if (p.trim()) govc(["vm.destroy", p.trim()], env);
}

before(() => {
  installVsop();
  ns = createNamespace("faults");
  destroyLeftovers();
  apply(
    vcenterSecret(),
    vcenterSecret(WRONG_PASSWORD, BADPW_SECRET),
    ...mcollectiveSecrets(),
    ...Object.entries(CLASSES).map(([name, o]) => virtualServerClass(name, o)),
    virtualServerClass("faults-badca", { ...GUESTINFO, vcenter: { caBundle: KUBE_CA() } }),
  );
  for (const [n, address] of Object.entries(HOSTS)) addDNS(address, hostname(Number(n)));
  for (const [name, address] of Object.entries(SERVICES_45)) addDNS(address, name);
  op = startOperator("faults", ["--label-selector", "vsop-test=faults", "--resync-period", "5s"]);
});

after(async () => {
  // A server that asked for a VM keeps its finalizer while its class cannot reach vCenter (vsop
  // cannot tell whether the VM exists), so repair the broken classes, but only once the servers
  // are being deleted: else they would all go on to create their VMs first.
  kubectl(["-n", ns, "delete", "virtualservers", "--all", "--wait=false"]);
  apply(
    virtualServerClass("faults-badpw", GUESTINFO),
    virtualServerClass("faults-badca", GUESTINFO),
  );
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0, "operator exits 0 on SIGTERM");
  kubectl([
    "delete",
    "virtualserverclass",
    ...Object.keys(CLASSES),
    "faults-badca",
    "faults-tlsprobe",
    "faults-private",
    "--ignore-not-found",
  ]);
  kubectl([
    ...["-n", "vsop-system", "delete", "secret", BADPW_SECRET, PRIVATE_SECRET],
    "--ignore-not-found",
  ]);
  kubectl(["delete", "namespace", ns, "--wait=false"]);
  for (const n of Object.keys(HOSTS)) removeDNS(hostname(Number(n)));
  for (const name of Object.keys(SERVICES_45)) removeDNS(name);
  destroyLeftovers();
});

function server(name: string, n: number, className: string, labels = LABELS): void {
  apply(virtualServer(ns, name, hostname(n), className, labels));
}

/** Ready=False with the reason (and the step's condition too), a sentence, a Warning Event. */
async function expectRefused(
  name: string,
  reason: string,
  condType?: string,
  timeoutMs = 60_000,
): Promise<VS> {
  const obj = await waitForCondition(ns, name, "Ready", "False", reason, timeoutMs);
  const ready = cond(obj, "Ready")!;
  assert.match(ready.message, SENTENCE, `the message of ${name} is a sentence`);
  if (condType) {
    const c = cond(obj, condType);
    assert.equal(c?.status, "False", `${condType} of ${name}`);
    assert.equal(c?.reason, reason);
  }
  await waitFor(`Warning event ${reason} on ${name}`, () =>
    events(ns, name).find((e) => e.type === "Warning" && e.reason === reason),
  );
  return obj;
}

async function soap(method: string, o: Operator = op): Promise<number> {
  return metric((await scrape(o.metricsPort)).body, "vsop_vsphere_soap_requests_total", {
    method,
  });
}

/** The promise's value, or a failure after `ms` (the timer does not outlive the promise). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function noVM(n: number): void {
  assert.equal(findVMs(vmName(n)).length, 0, `no VM ${vmName(n)} in vSphere`);
}

// --- connection faults -----------------------------------------------------------------------------

test("CA bundle that does not match vcsim's certificate → VCenterTLSError, no Login sent", async (t) => {
  server("tls", 74, "faults-badca");
  const obj = await expectRefused("tls", "VCenterTLSError");
  assert.match(cond(obj, "Ready")!.message, /caBundle/);
  await sleep(5000); // several retries
  // This is the first class the operator connects with, so every Login would be this class's.
  assert.equal(await soap("Login"), 0, "no Login was sent");
  t.diagnostic(
    `RetrieveServiceContent attempts (refused at the handshake): ${await soap("RetrieveServiceContent")}`,
  );
  noVM(74);
});

test("a CA mismatch stops at the TLS handshake: the server never sees a request", async () => {
  const pki = path.join(stackEnv("VSOP_STACK_DIR"), "pki");
  let requests = 0;
  let refusedHandshakes = 0;
  const probe = https.createServer(
    {
      cert: readFileSync(path.join(pki, "vcsim.crt")),
      key: readFileSync(path.join(pki, "vcsim.key")),
    },
    (_req, res) => {
      requests++;
      res.end();
    },
  );
  probe.on("tlsClientError", () => refusedHandshakes++);
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = (probe.address() as { port: number }).port;
  try {
    apply(
      virtualServerClass("faults-tlsprobe", {
        ...GUESTINFO,
        vcenter: { url: `https://127.0.0.1:${port}/sdk`, caBundle: KUBE_CA() },
      }),
    );
    server("tlsprobe", 84, "faults-tlsprobe");
    await expectRefused("tlsprobe", "VCenterTLSError");
    assert.ok(refusedHandshakes >= 1, "the operator tried, and refused the certificate");
    assert.equal(requests, 0, "no HTTP request reached the server");
    assert.equal(await soap("Login"), 0);
  } finally {
    // Released only once vsop can look for a VM, so point the class at the stack's vcsim.
    apply(virtualServerClass("faults-tlsprobe", GUESTINFO));
    kubectl(["-n", ns, "delete", "vsrv", "tlsprobe", "--wait=false", "--ignore-not-found"]);
    await waitFor("tlsprobe released", () => getVS(ns, "tlsprobe") === undefined);
    probe.closeAllConnections();
    probe.close();
  }
});

test("wrong password → VCenterAuthFailed with backoff: no login storm", async (t) => {
  const logins0 = await soap("Login");
  const errors0 = metric((await scrape(op.metricsPort)).body, "vsop_reconcile_errors_total", {
    reason: "VCenterAuthFailed",
  });
  const started = Date.now();
  for (const [name, n] of [
    ["auth1", 71],
    ["auth2", 72],
    ["auth3", 73],
  ] as const)
    server(name, n, "faults-badpw");
  for (const name of ["auth1", "auth2", "auth3"]) {
    const obj = await expectRefused(name, "VCenterAuthFailed");
    assert.match(cond(obj, "Ready")!.message, /Secret/);
  }
  await sleep(Math.max(0, 15_000 - (Date.now() - started)));
  const body = (await scrape(op.metricsPort)).body;
  const logins = metric(body, "vsop_vsphere_soap_requests_total", { method: "Login" }) - logins0;
  const retries =
    metric(body, "vsop_reconcile_errors_total", { reason: "VCenterAuthFailed" }) - errors0;
  t.diagnostic(`${logins} Login calls and ${retries} failed reconciles in 15 s, 3 servers`);
  assert.ok(logins >= 1, "the operator did try");
  assert.ok(logins <= 4, `no login storm: ${logins} Login calls in 15 s`);
  assert.ok(retries >= 6, "reconciles went on retrying without logging in each time");
  assert.ok(!op.logs().includes(WRONG_PASSWORD), "the password is never logged");
  for (const n of [71, 72, 73]) noVM(n);
  // It never asked vCenter for a VM, so deleting it needs no vCenter: released at once.
  kubectl(["-n", ns, "delete", "virtualserver", "auth1", "--wait=false"]);
  await waitFor(
    "auth1 released although its vCenter refuses the login",
    () => !kubectlTry(["-n", ns, "get", "virtualserver", "auth1"]).ok,
    15_000,
  );
});

// --- missing port groups and placement objects -----------------------------------------------------

test("no port group for the VLAN → VLANPortGroupMissing, no VM", async () => {
  server("vlan45", 75, "faults-ok");
  const obj = await expectRefused("vlan45", "VLANPortGroupMissing", "VMCreated");
  assert.equal(obj.status?.vlan, 45);
  assert.match(cond(obj, "Ready")!.message, /"VLAN-45" for VLAN 45/);
  noVM(75);
});

test("Boot-VLAN port group missing → BootPortGroupMissing, no VM", async () => {
  server("nobootpg", 76, "faults-nobootpg");
  const obj = await expectRefused("nobootpg", "BootPortGroupMissing", "VMCreated");
  assert.match(cond(obj, "Ready")!.message, /"Boot-Nope"/);
  noVM(76);
});

test("datastore, folder, resource pool, cluster missing → a reason naming which, no VM", async () => {
  const cases = [
    ["nods", 77, "faults-nods", "DatastoreNotFound", "LocalDS_nope"],
    ["nofolder", 78, "faults-nofolder", "FolderNotFound", "faults-nope"],
    ["nopool", 79, "faults-nopool", "ResourcePoolNotFound", "faults-nope"],
    ["nocluster", 80, "faults-nocluster", "ClusterNotFound", "DC0_Cnope"],
  ] as const;
  for (const [name, n, cls] of cases) server(name, n, cls);
  for (const [name, n, , reason, object] of cases) {
    const obj = await expectRefused(name, reason, "VMCreated");
    const message = cond(obj, "Ready")!.message;
    assert.ok(message.includes(`"${object}"`), `${reason} names ${object}: ${message}`);
    noVM(n);
  }
});

// --- a foreign VM with the wanted name ----------------------------------------------------------

interface Snapshot {
  moRef: string;
  powerState: string;
  changeVersion: string;
  vsopKeys: string[];
}

function snapshot(vm: GovcVM): Snapshot {
  return {
    moRef: vm.self.value,
    powerState: vm.runtime.powerState,
    changeVersion: govc(["object.collect", "-s", `/DC0/vm/${vm.name}`, "config.changeVersion"]),
    vsopKeys: Object.keys(extraConfig(vm)).filter((k) => k.startsWith("vsop.")),
  };
}

test("foreign VM with the same name → VMNameConflict; untouched, also after the delete", async () => {
  const name = vmName(83);
  govc([
    ...["vm.create", "-on=true", "-net", "VLAN-30", "-ds", "LocalDS_0"],
    ...["-pool", "/DC0/host/DC0_C0/Resources", name],
  ]);
  const [foreign, ...more] = findVMs(name);
  assert.ok(foreign && more.length === 0);
  const before = snapshot(foreign);
  assert.deepEqual(before.vsopKeys, []);

  server("squatted", 83, "faults-ok");
  const obj = await expectRefused("squatted", "VMNameConflict", "VMCreated");
  assert.ok(cond(obj, "Ready")!.message.includes(foreign.self.value), "names the VM's moRef");
  await sleep(6000); // retries and a resync
  const vms = findVMs(name);
  assert.equal(vms.length, 1, "no second VM of that name");
  assert.deepEqual(snapshot(vms[0]!), before, "the foreign VM is unchanged");

  kubectl(["-n", ns, "delete", "vsrv", "squatted", "--wait=false"]);
  await waitFor("squatted released", () => getVS(ns, "squatted") === undefined, 60_000);
  const afterDelete = findVMs(name);
  assert.equal(afterDelete.length, 1, "the finalizer did not delete the foreign VM");
  assert.deepEqual(snapshot(afterDelete[0]!), before, "still unchanged after the delete");
  govc(["vm.destroy", name]);
});

// --- the operator killed right after CreateVM_Task --------------------------------------------------

interface GovcBoot {
  config: { bootOptions?: { bootOrder?: { deviceKey?: number }[] } };
}

/** The device keys of the VM's boot order (empty when none is set). */
function bootOrder(name: string): number[] {
  const info = JSON.parse(govc(["vm.info", "-json", `/DC0/vm/${name}`])) as {
    virtualMachines: GovcBoot[];
  };
  return (info.virtualMachines[0]?.config.bootOptions?.bootOrder ?? []).map(
    (b) => b.deviceKey ?? -1,
  );
}

/**
 * Kills an operator right after it sent CreateVM_Task for the server, starts another one and
 * checks that it adopts that VM: exactly one, with the status naming it, and finished.
 */
async function killAfterCreate(
  t: { diagnostic: (m: string) => void },
  objName: string,
  n: number,
  className: string,
  check: (vm: GovcVM) => void = () => undefined,
): Promise<void> {
  const name = vmName(n);
  const flags = ["--label-selector", "vsop-test=faults-kill", "--resync-period", "5s"];
  const first = startOperator(`faults-kill-${objName}-1`, flags);
  let second: Operator | undefined;
  try {
    const killed = new Promise<string>((resolve) => {
      let buf = "";
      first.proc.stdout!.on("data", (chunk: Buffer) => {
        buf += chunk.toString("utf8");
        for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (
            line.includes('"msg":"creating VM"') &&
            line.includes('"method":"CreateVM_Task"') &&
            line.includes(`"vm":"${name}"`)
          ) {
            first.proc.kill("SIGKILL");
            resolve(line);
          }
        }
      });
    });
    server(objName, n, className, KILL_LABELS);
    const line = await within(killed, 90_000, "a 'creating VM' line with a CreateVM_Task");
    await first.stop();
    assert.equal(first.proc.signalCode, "SIGKILL");
    const task = (JSON.parse(line) as { task?: string }).task;
    t.diagnostic(
      `${className}: killed after ${task}; VMs of that name now: ${findVMs(name).length}; ` +
        `VMCreated in status: ${cond(getVS(ns, objName), "VMCreated")?.status ?? "(none)"}`,
    );

    second = startOperator(`faults-kill-${objName}-2`, flags);
    const vs = await waitForCondition(ns, objName, "VMCreated", "True", undefined, 90_000);
    const vms = findVMs(name);
    assert.equal(vms.length, 1, "exactly one VM");
    const vm = vms[0]!;
    const status = vs.status!.vm as { moRef: string; instanceUUID: string };
    assert.equal(status.moRef, vm.self.value, "status names the VM govc sees");
    assert.equal(status.instanceUUID, vm.config.instanceUuid);
    assert.equal(extraConfig(vm)["vsop.owner-uid"], vs.metadata.uid);
    await waitFor("the adopted VM powered on", () => {
      const v = findVMs(name);
      return v.length === 1 && v[0]!.runtime.powerState === "poweredOn";
    });
    await sleep(6000); // a resync of the converged object
    const now = findVMs(name);
    assert.equal(now.length, 1, "still exactly one VM");
    assert.equal(now[0]!.self.value, vm.self.value);
    check(now[0]!);

    kubectl(["-n", ns, "delete", "vsrv", objName, "--wait=false"]);
    await waitFor(`${objName} released`, () => getVS(ns, objName) === undefined, 60_000);
    assert.equal(findVMs(name).length, 0, "the VM was destroyed with its object");
  } finally {
    await first.stop("SIGKILL");
    // Only an operator with this label selector can release the object.
    if (getVS(ns, objName)) {
      second ??= startOperator(`faults-kill-${objName}-2`, flags);
      kubectl(["-n", ns, "delete", "vsrv", objName, "--wait=false"]);
      await waitFor(`${objName} released`, () => getVS(ns, objName) === undefined, 60_000);
    }
    if (second) assert.equal(await second.stop(), 0);
  }
}

test("SIGKILL right after CreateVM_Task was sent, restart → exactly one VM, converged status", async (t) => {
  await killAfterCreate(t, "killed", 81, "faults-ok");
});

test("the same with a network install: the adopted VM also gets its boot order (boot NIC first)", async (t) => {
  await killAfterCreate(t, "killed-net", 85, "faults-net", (vm) => {
    const pg = portGroupNames();
    const bootNic = nics(vm).find((d) => pg[d.backing!.port!.portgroupKey] === "Boot-VLAN");
    assert.ok(bootNic, "a boot NIC");
    assert.equal(bootOrder(vm.name)[0], bootNic.key, "network boot from the Boot-VLAN NIC first");
  });
});

// --- vCenter goes away in the middle of an install (a private vcsim) --------------------------------

test("vcsim stopped while a server installs, started again empty → re-login, converges, one VM", async (t) => {
  const vc = await privateVcsim();
  const { port, url, password, env } = vc;
  const startVcsim = () => vc.start();
  const name = vmName(82);
  const synced = () =>
    op
      .logs()
      .split("\n")
      .filter((l) => l.includes(`"vcenter":"127.0.0.1:${port}"`) && l.includes("VM cache synced"))
      .length;
  let vcsim = await startVcsim();
  try {
    apply(
      vcenterSecret(password, PRIVATE_SECRET),
      virtualServerClass("faults-private", { vcenter: { url, credentialsSecret: PRIVATE_SECRET } }),
    );
    server("outage", 82, "faults-private");
    // Network install: VM created and powered on, then the operator waits for the installer.
    await waitForCondition(ns, "outage", "Installed", "False", "WaitingForInstall", 90_000);
    const [first, ...others] = findVMs(name, env);
    assert.ok(first && others.length === 0);
    assert.equal(findVMs(name).length, 0, "nothing on the shared vcsim");
    const oldUUID = first.config.instanceUuid;
    assert.equal(synced(), 1);

    vcsim.kill("SIGKILL");
    await once(vcsim, "exit");
    const down = await expectRefused("outage", "VCenterUnreachable");
    assert.match(cond(down, "Ready")!.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.equal(op.proc.exitCode, null, "the operator is still running");

    vcsim = await startVcsim(); // same port, a fresh inventory without the VM
    // Only vsop creates a VM with this object's owner mark, so finding one on the new vcsim
    // means it logged in again, noticed the VM was gone, and created it anew.
    const vs = await waitFor(
      "outage: its VM recreated on the new vcsim, status following",
      () => {
        const v = getVS(ns, "outage");
        const vms = findVMs(name, env);
        const s = v?.status?.vm as { moRef?: string } | undefined;
        return vms.length === 1 &&
          extraConfig(vms[0]!)["vsop.owner-uid"] === v?.metadata.uid &&
          cond(v, "VMCreated")?.status === "True" &&
          cond(v, "Ready")?.reason !== "VCenterUnreachable" &&
          s?.moRef === vms[0]!.self.value &&
          // A new VM is a blank machine: powered on to install again.
          vms[0]!.runtime.powerState === "poweredOn" &&
          cond(v, "Installed")?.reason === "WaitingForInstall"
          ? v
          : undefined;
      },
      120_000,
    );
    assert.ok(synced() >= 2, "the operator logged in again and resynced its VM cache");
    await sleep(6000); // a resync of the recreated VM
    const vms = findVMs(name, env);
    assert.equal(vms.length, 1, "exactly one VM, no duplicate");
    assert.equal((vs.status!.vm as { moRef: string }).moRef, vms[0]!.self.value);
    assert.equal(op.proc.exitCode, null, "no crash");
    assert.equal(vms[0]!.runtime.powerState, "poweredOn");
    t.diagnostic(
      `after the outage: Ready ${cond(getVS(ns, "outage"), "Ready")?.reason}; vcsim ` +
        (oldUUID === vms[0]!.config.instanceUuid ? "reused" : "did not reuse") +
        " the old instance UUID",
    );

    kubectl(["-n", ns, "delete", "vsrv", "outage", "--wait=false"]);
    await waitFor("outage released", () => getVS(ns, "outage") === undefined, 60_000);
    assert.equal(findVMs(name, env).length, 0, "the VM was destroyed with its object");
  } finally {
    if (getVS(ns, "outage")) {
      // Leave nothing that needs this vcsim to be released.
      kubectl(["-n", ns, "delete", "vsrv", "outage", "--wait=false"]);
      await waitFor("outage released", () => getVS(ns, "outage") === undefined, 60_000).catch(
        () => undefined,
      );
    }
    if (vcsim.exitCode === null && vcsim.signalCode === null) {
      vcsim.kill("SIGKILL");
      await once(vcsim, "exit");
    }
  }
});

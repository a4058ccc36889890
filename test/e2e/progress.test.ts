// What a person sees while servers provision (issue 17): the short names vsrv/vsrvc, the
// Installing-Since and (wide) Message columns, the installer's first sign of life in status with
// one Normal Event, and phases that tell "vsop keeps trying" (Waiting) from "needs a person"
// (Failed).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
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
  removeDNS,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
  type VS,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import {
  bootstrapURLIn,
  fetchBootstrap,
  fetchKickstart,
  installToken,
  readGuestinfo,
} from "../support/installer.js";

const NETWORK = "progress-network";
const GUESTINFO = "progress-guestinfo";
const LABELS = { "vsop-test": "progress" };
const HOSTS: Record<string, string> = {
  "prog-prod-1.example.test": "10.12.30.201",
  "prog-prod-2.example.test": "10.12.30.202",
};
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("progress");
  for (const [host, address] of Object.entries(HOSTS)) addDNS(address, host);
  applyClass(NETWORK, { boot: { method: "network" } });
  applyClass(GUESTINFO, { boot: { method: "guestinfo" } });
  op = startOperator("progress", [
    "--label-selector",
    "vsop-test=progress",
    "--resync-period",
    "2s",
  ]);
});

after(async () => {
  try {
    await deleteServers(ns, 120_000);
  } finally {
    assert.equal(await op.stop(), 0);
    kubectl(["delete", "virtualserverclass", NETWORK, GUESTINFO, "--ignore-not-found"]);
    kubectl(["delete", "namespace", ns, "--wait=false"]);
    for (const host of Object.keys(HOSTS)) removeDNS(host);
  }
});

const install = (vs: VS | undefined) =>
  (vs?.status?.install ?? {}) as {
    method?: string;
    startedAt?: string;
    kickstartFetchedAt?: string;
    keysFetchedAt?: string;
  };

/** `kubectl get` as a table: the header's column names and the row's cells (split on 2+ spaces). */
function table(args: string[]): { header: string[]; row: Record<string, string> } {
  const [head, line] = kubectl(args).trimEnd().split("\n");
  // Column starts come from the header; cells are cut at them (a message has single spaces).
  const starts = [...head!.matchAll(/\S+/g)].map((m) => ({ name: m[0], at: m.index }));
  const row: Record<string, string> = {};
  starts.forEach((c, i) => {
    row[c.name] = line!.slice(c.at, starts[i + 1]?.at ?? line!.length).trim();
  });
  return { header: starts.map((c) => c.name), row };
}

test("short names: vsrv and vsrvc work, vs and vsc are not ours; category vsop lists both", () => {
  const resources = kubectl(["api-resources", "--api-group=provisioning.vsop.dev", "--no-headers"]);
  const rows = resources
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s+/));
  const vsRow = rows.find((r) => r[0] === "virtualservers")!;
  const vscRow = rows.find((r) => r[0] === "virtualserverclasses")!;
  assert.equal(vsRow[1], "vsrv", resources);
  assert.equal(vscRow[1], "vsrvc", resources);
  for (const r of rows) {
    assert.ok(!["vs", "vsc"].includes(r[1]!), `${r[0]} still has short name ${r[1]}`);
  }

  apply(virtualServer(ns, "names", "absent-prod-7.example.test", NETWORK, LABELS));
  assert.match(kubectl(["-n", ns, "get", "vsrv", "names"]), /^NAME\s+HOSTNAME/);
  assert.match(kubectl(["-n", ns, "get", "vsrv", "-o", "name"]), /virtualserver\..*\/names/);
  assert.match(kubectl(["get", "vsrvc", NETWORK, "-o", "name"]).trim(), new RegExp(`/${NETWORK}$`));
  const category = kubectl(["-n", ns, "get", "vsop", "-o", "name"]);
  assert.match(category, /virtualserver\.provisioning\.vsop\.dev\/names/);
  assert.match(category, new RegExp(`virtualserverclass\\.provisioning\\.vsop\\.dev/${NETWORK}`));
  // In this cluster nothing else is called vs: the name is unknown rather than ours.
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), "vsop-kubectl-"));
  const vs = kubectlTry(["-n", ns, "get", "vs", "--cache-dir", cacheDir]);
  rmSync(cacheDir, { recursive: true, force: true });
  assert.equal(vs.ok, false, "kubectl get vs no longer lists VirtualServers");
  assert.match(vs.out, /doesn't have a resource type "vs"/);
  kubectl(["-n", ns, "delete", "vsrv", "names", "--wait=false"]);
});

test("a name not yet in DNS is phase Waiting (vsop retries), not Failed", async () => {
  apply(virtualServer(ns, "notyet", "absent-prod-8.example.test", NETWORK, LABELS));
  const vs = await waitForCondition(ns, "notyet", "Ready", "False", "NameNotResolvable");
  assert.equal(vs.status?.phase, "Waiting");
  const t = table(["-n", ns, "get", "vsrv", "notyet"]);
  assert.equal(t.row.PHASE, "Waiting");
  // Stays Waiting through the retries.
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(getVS(ns, "notyet")?.status?.phase, "Waiting");
  kubectl(["-n", ns, "delete", "vsrv", "notyet", "--wait=false"]);
});

test("a name outside the naming convention is phase Failed (a person has to act)", async () => {
  apply(virtualServer(ns, "badname", "progressserver.example.test", NETWORK, LABELS));
  const vs = await waitForCondition(ns, "badname", "Ready", "False", "NameConventionViolation");
  assert.equal(vs.status?.phase, "Failed");
  assert.equal(table(["-n", ns, "get", "vsrv", "badname"]).row.PHASE, "Failed");
  kubectl(["-n", ns, "delete", "vsrv", "badname", "--wait=false"]);
});

test("network install: Installing-Since, the wide Message, kickstartFetchedAt with one Normal Event", async () => {
  apply(virtualServer(ns, "net", "prog-prod-1.example.test", NETWORK, LABELS));
  const installing = await waitForCondition(
    ns,
    "net",
    "Installed",
    "False",
    "WaitingForInstall",
    90_000,
  );
  assert.equal(installing.status?.phase, "Installing");
  const startedAt = install(installing).startedAt;
  assert.ok(startedAt, "status.install.startedAt");
  assert.equal(install(installing).kickstartFetchedAt, undefined);

  const plain = table(["-n", ns, "get", "vsrv", "net"]);
  assert.deepEqual(plain.header, [
    "NAME",
    "HOSTNAME",
    "ADDRESS",
    "VLAN",
    "PHASE",
    "READY",
    "INSTALLING-SINCE",
    "AGE",
  ]);
  assert.equal(plain.row.PHASE, "Installing");
  assert.match(plain.row["INSTALLING-SINCE"]!, /^\d+[smhd]/, "a duration since startedAt");

  const before = await waitFor("the Ready message says the installer has not come yet", () => {
    const wide = table(["-n", ns, "get", "vsrv", "net", "-o", "wide"]);
    return /waiting for the installer to fetch its kickstart/.test(wide.row.MESSAGE ?? "")
      ? wide
      : undefined;
  });
  assert.ok(before.header.includes("MESSAGE"), before.header.join(" "));
  assert.ok(before.header.includes("REASON"));
  assert.equal(before.row.REASON, "Installing");
  assert.ok(!plain.header.includes("MESSAGE"), "the message is a wide column only");

  const token = installToken(installing.metadata.uid);
  assert.equal((await fetchKickstart(op.provisioningPort, token)).status, 200);
  const fetched = await waitFor("status.install.kickstartFetchedAt", () => {
    const vs = getVS(ns, "net");
    return install(vs).kickstartFetchedAt ? vs : undefined;
  });
  const at = install(fetched).kickstartFetchedAt!;
  assert.ok(at >= startedAt!, `fetched ${at} after power-on ${startedAt}`);
  assert.equal(fetched.status?.phase, "Installing");
  assert.match(
    cond(fetched, "Ready")!.message,
    new RegExp(`fetched its kickstart at ${at.replace(/\./g, "\\.")}`),
  );
  const wide = table(["-n", ns, "get", "vsrv", "net", "-o", "wide"]);
  assert.match(wide.row.MESSAGE!, /the installer fetched its kickstart at/);

  await waitFor("a KickstartFetched event", () =>
    events(ns, "net").find((e) => e.reason === "KickstartFetched"),
  );
  // A retrying installer fetches again: nothing changes, no second Event.
  assert.equal((await fetchKickstart(op.provisioningPort, token)).status, 200);
  await new Promise((r) => setTimeout(r, 4000));
  const normal = events(ns, "net").filter((e) => e.reason === "KickstartFetched");
  assert.equal(normal.length, 1, JSON.stringify(normal));
  assert.equal(normal[0]!.type, "Normal");
  assert.equal(install(getVS(ns, "net")).kickstartFetchedAt, at, "recorded once");
  assert.ok(!op.logs().includes(token), "the token is never logged");
});

test("guestinfo install: its first sign of life is the key fetch, announced as InstallerStarted", async () => {
  apply(virtualServer(ns, "gi", "prog-prod-2.example.test", GUESTINFO, LABELS));
  const installing = await waitForCondition(
    ns,
    "gi",
    "Installed",
    "False",
    "WaitingForInstall",
    90_000,
  );
  assert.equal(install(installing).method, "guestinfo");
  assert.equal(install(installing).kickstartFetchedAt, undefined);
  await waitFor("the Ready message says the installer has not come yet", () =>
    /waiting for the installer to fetch its keys/.test(
      cond(getVS(ns, "gi"), "Ready")?.message ?? "",
    ),
  );

  const url = bootstrapURLIn(readGuestinfo("prog-prod-2").userData);
  const keys = await fetchBootstrap(url);
  assert.equal(keys.status, 200);
  const fetched = await waitFor("status.install.kickstartFetchedAt", () => {
    const vs = getVS(ns, "gi");
    return install(vs).kickstartFetchedAt ? vs : undefined;
  });
  assert.equal(install(fetched).keysFetchedAt, install(fetched).kickstartFetchedAt);
  assert.match(cond(fetched, "Ready")!.message, /the installer fetched its keys at/);
  await waitFor("an InstallerStarted event", () =>
    events(ns, "gi").find((e) => e.reason === "InstallerStarted" && e.type === "Normal"),
  );
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(events(ns, "gi").filter((e) => e.reason === "InstallerStarted").length, 1);
  assert.equal(events(ns, "gi").filter((e) => e.reason === "KickstartFetched").length, 0);
});

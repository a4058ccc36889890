// Per-server boot ISOs built with the real xorriso and read back with it. Needs only xorriso,
// not the rest of the stack.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildIso, IsoBuildError } from "../../src/provision/iso.js";
import { noCloudFiles, renderCloudInit, renderKickstart } from "../../src/provision/render.js";
import { netmaskFromPrefix, type InstallVariables } from "../../src/provision/variables.js";

const vars: InstallVariables = {
  hostname: "db-test-2.example.com",
  shortName: "db-test-2",
  domain: "example.com",
  apptype: "db",
  environment: "test",
  instance: "2",
  address: "10.12.40.21",
  prefixLength: 24,
  netmask: netmaskFromPrefix(24),
  vlan: 40,
  services: { dns: "10.12.40.2", ntp: "10.12.40.4", proxy: "10.12.40.3" },
  mcollective: {
    brokerHost: "broker.example.com",
    brokerPort: 61613,
    collective: "mcollective",
    identity: "db-test-2.example.com",
    clientCertName: "vsop",
  },
  puppet: { environment: "test" },
  provisioning: {},
};

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vsop-iso-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function readBack(iso: Buffer, dir: string): { volumeId: string; listing: string[]; root: string } {
  const path = join(dir, "image.iso");
  writeFileSync(path, iso);
  const info = execFileSync("xorriso", ["-indev", path, "-pvd_info"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  const volumeId = /^Volume Id\s*:\s*(.*)$/m.exec(info)?.[1]?.trim() ?? "";
  const ls = execFileSync("xorriso", ["-indev", path, "-ls", "/"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  const listing = ls
    .split("\n")
    .filter((l) => l.startsWith("'"))
    .map((l) => l.slice(1, -1));
  const root = join(dir, "extracted");
  execFileSync("xorriso", ["-osirrox", "on", "-indev", path, "-extract", "/", root], {
    stdio: "ignore",
  });
  return { volumeId, listing, root };
}

test("a cidata ISO carries the NoCloud files under volume id cidata", async (t) => {
  const dir = scratch(t);
  const work = join(dir, "tmp");
  mkdirSync(work);
  const files = renderCloudInit(vars);
  const iso = await buildIso({
    volumeId: "cidata",
    files: noCloudFiles(files),
    tmpDir: work,
  });
  assert.deepEqual(readdirSync(work), [], "the temporary directory is removed");
  const back = readBack(iso, dir);
  assert.equal(back.volumeId, "cidata");
  assert.deepEqual(back.listing.sort(), ["meta-data", "network-config", "user-data"]);
  assert.equal(readFileSync(join(back.root, "user-data"), "utf8"), files.userData);
  assert.equal(readFileSync(join(back.root, "meta-data"), "utf8"), files.metaData);
  assert.equal(readFileSync(join(back.root, "network-config"), "utf8"), files.networkConfig);
});

test("an OEMDRV ISO carries ks.cfg, and binary files survive", async (t) => {
  const dir = scratch(t);
  const ks = renderKickstart(vars);
  const blob = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 256));
  const iso = await buildIso({
    volumeId: "OEMDRV",
    files: { "ks.cfg": ks, "extra/blob.bin": blob },
  });
  const back = readBack(iso, dir);
  assert.equal(back.volumeId, "OEMDRV");
  assert.deepEqual(back.listing.sort(), ["extra", "ks.cfg"]);
  assert.equal(readFileSync(join(back.root, "ks.cfg"), "utf8"), ks);
  assert.deepEqual(readFileSync(join(back.root, "extra/blob.bin")), blob);
});

test("ISO build errors are typed and leave nothing behind", async (t) => {
  const work = scratch(t);
  await assert.rejects(
    buildIso({ volumeId: "cidata", files: { "../escape": "x" }, tmpDir: work }),
    IsoBuildError,
  );
  await assert.rejects(
    buildIso({ volumeId: "CIDATA" as "cidata", files: { a: "x" }, tmpDir: work }),
    /not cidata or OEMDRV/,
  );
  await assert.rejects(
    buildIso({ volumeId: "cidata", files: { a: "x" }, tmpDir: work, xorriso: "false" }),
    (err: unknown) => err instanceof IsoBuildError && err.exitCode === 1,
  );
  await assert.rejects(
    buildIso({ volumeId: "cidata", files: { a: "x" }, tmpDir: work, xorriso: "vsop-no-such-tool" }),
    /not found/,
  );
  // A hanging xorriso is killed at the deadline.
  const hang = join(work, "hang.sh");
  writeFileSync(hang, "#!/bin/sh\necho starting >&2\nexec sleep 30\n");
  chmodSync(hang, 0o755);
  const started = Date.now();
  await assert.rejects(
    buildIso({
      volumeId: "cidata",
      files: { a: "x" },
      tmpDir: work,
      xorriso: hang,
      timeoutMs: 300,
    }),
    (err: unknown) => err instanceof IsoBuildError && err.timedOut && err.stderrTail === "starting",
  );
  assert.ok(Date.now() - started < 5_000);
  rmSync(hang);
  assert.deepEqual(readdirSync(work), []);
});

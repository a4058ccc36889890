// The vSphere update loop against a scripted session: a long poll that times out on the client
// is a stall (new collector, cache kept in use), two failures in a row are an outage; a batch
// older than our own read of a VM does not take that VM back.
import test from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { UpdateLoop } from "../../src/vsphere/watch.js";
import { VMCache } from "../../src/vsphere/cache.js";
import { VSphereFault, VSphereUnreachable } from "../../src/vsphere/errors.js";
import { MoRef, type Node } from "../../src/vsphere/xml.js";
import type { VSphereSession } from "../../src/vsphere/session.js";
import { currentSignal } from "../../src/abort.js";

type Poll = () => Promise<Node>;

/**
 * A session whose WaitForUpdatesEx answers from `polls` in turn, then waits until cancelled;
 * RetrievePropertiesEx answers with `retrieved`.
 */
function scriptedSession(polls: Poll[], retrieved: () => Node = () => "") {
  const calls: string[] = [];
  let resets = 0;
  let cancel: (() => void) | undefined;
  let collectors = 0;
  const session = {
    serviceContent: () =>
      Promise.resolve({
        rootFolder: new MoRef("Folder", "group-d1"),
        propertyCollector: new MoRef("PropertyCollector", "propertyCollector"),
      }),
    invoke: (method: string): Promise<Node> => {
      calls.push(method);
      if (method === "CreatePropertyCollector")
        return Promise.resolve(new MoRef("PropertyCollector", `pc-${++collectors}`));
      if (method === "CancelWaitForUpdates") cancel?.();
      if (method === "RetrievePropertiesEx") return Promise.resolve(retrieved());
      if (method !== "WaitForUpdatesEx") return Promise.resolve("");
      const next = polls.shift();
      if (next) return next();
      return new Promise((_, reject) => {
        cancel = () => reject(new VSphereFault("RequestCanceled", method, ""));
      });
    },
    reset: () => void resets++,
  };
  return { session: session as unknown as VSphereSession, calls, resets: () => resets };
}

const snapshot: Poll = () => Promise.resolve({ version: "1" });
const stall: Poll = () => Promise.reject(new VSphereUnreachable("https://vc/sdk", "ECONNABORTED"));
const settle = () => new Promise((r) => setTimeout(r, 50));

function loopOn(session: VSphereSession, cache = new VMCache()) {
  return new UpdateLoop(session, cache, pino({ level: "silent" }), {
    maxWaitSeconds: 20,
    backoffBaseMs: 10,
    backoffMaxMs: 20,
  });
}

test("a stalled long poll gets a new collector; the cache stays synced and the session kept", async () => {
  let syncedDuringStall: boolean | undefined;
  const loop = loopOn(undefined as unknown as VSphereSession);
  const { session, calls, resets } = scriptedSession([
    snapshot,
    () => {
      syncedDuringStall = loop.synced;
      return stall();
    },
    () => {
      syncedDuringStall &&= loop.synced; // still in use while the new snapshot is taken
      return snapshot();
    },
  ]);
  Object.assign(loop, { session });
  await loop.start();
  await settle();
  assert.equal(syncedDuringStall, true);
  assert.equal(loop.synced, true);
  assert.equal(loop.resyncs, 2);
  assert.equal(resets(), 0);
  assert.equal(calls.filter((c) => c === "CreatePropertyCollector").length, 2);
  assert.equal(calls.filter((c) => c === "DestroyPropertyCollector").length, 1);
  await loop.stop();
});

test("a stall followed by a failed snapshot is an outage: unsynced, session reset", async () => {
  const loop = loopOn(undefined as unknown as VSphereSession);
  const refused: Poll = () =>
    Promise.reject(new VSphereUnreachable("https://vc/sdk", "ECONNREFUSED"));
  const { session, resets } = scriptedSession([snapshot, stall, refused]);
  Object.assign(loop, { session });
  await loop.start();
  await settle();
  // After the backoff the loop syncs again from the script's end (a poll that waits).
  assert.equal(resets(), 1);
  assert.match(String(loop.lastError?.message ?? ""), /ECONNREFUSED/);
  await loop.stop();
});

test("two stalls in a row are an outage too", async () => {
  const loop = loopOn(undefined as unknown as VSphereSession);
  let syncedAtSecond: boolean | undefined;
  const { session, resets } = scriptedSession([
    snapshot,
    stall,
    () => {
      syncedAtSecond = loop.synced;
      return stall();
    },
  ]);
  Object.assign(loop, { session });
  await loop.start();
  await settle();
  assert.equal(syncedAtSecond, true);
  assert.equal(resets(), 1);
  await loop.stop();
});

test("a poll that does not answer past its maxWait is cut and counts as a stall", async () => {
  // maxWait 0.05 s: a poll that hangs is cut at 0.1 s, as the SOAP transport would cut it.
  const hang: Poll = () =>
    new Promise((_, reject) => {
      const signal = currentSignal();
      signal?.addEventListener("abort", () =>
        reject(new VSphereUnreachable("https://vc/sdk", "ERR_CANCELED")),
      );
    });
  const { session, calls, resets } = scriptedSession([snapshot, hang, snapshot]);
  const loop = new UpdateLoop(session, new VMCache(), pino({ level: "silent" }), {
    maxWaitSeconds: 0.05,
    backoffBaseMs: 10,
    backoffMaxMs: 20,
  });
  await loop.start();
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(loop.synced, true);
  assert.equal(loop.resyncs, 2);
  assert.equal(resets(), 0);
  assert.equal(calls.filter((c) => c === "CreatePropertyCollector").length, 2);
  await loop.stop();
});

const VM = "vm-7";
/** RetrievePropertiesEx of the VM as it is now. */
const readNow = (): Node => ({
  objects: [{ obj: new MoRef("VirtualMachine", VM), propSet: [{ name: "name", val: "current" }] }],
});
const vmUpdate = (version: string, kind: string, name: string): Node => ({
  version,
  filterSet: [
    {
      objectSet: [
        {
          obj: new MoRef("VirtualMachine", VM),
          kind,
          changeSet: [{ name: "name", op: "assign", val: name }],
        },
      ],
    },
  ],
});

test("a batch that was out while we read a VM ourselves is not applied to it: the VM is read again", async () => {
  const cache = new VMCache();
  let release: (() => void) | undefined;
  const { session, calls } = scriptedSession(
    [
      () => Promise.resolve(vmUpdate("1", "enter", "created")),
      // The poll is out while a task's end is read (upsertVM), and comes back with a change
      // from before it.
      () =>
        new Promise((resolve) => {
          release = () => resolve(vmUpdate("2", "modify", "stale"));
        }),
    ],
    readNow,
  );
  const loop = loopOn(session, cache);
  await loop.start();
  await settle();
  assert.equal(cache.vmProps(VM)?.name, "created");
  cache.upsertVM(VM, { name: "read after the task" });
  release!();
  await settle();
  assert.equal(cache.vmProps(VM)?.name, "current", "read again, not the stale batch");
  assert.equal(calls.filter((c) => c === "RetrievePropertiesEx").length, 1);
  await loop.stop();
});

test("a batch for a VM not read meanwhile is applied as it is, with no extra read", async () => {
  const cache = new VMCache();
  const { session, calls } = scriptedSession([
    () => Promise.resolve(vmUpdate("1", "enter", "created")),
    () => Promise.resolve(vmUpdate("2", "modify", "renamed")),
  ]);
  const loop = loopOn(session, cache);
  await loop.start();
  await settle();
  assert.equal(cache.vmProps(VM)?.name, "renamed");
  assert.equal(calls.filter((c) => c === "RetrievePropertiesEx").length, 0);
  await loop.stop();
});

test("a VM our own read found gone is not brought back by a batch from before that read", async () => {
  const cache = new VMCache();
  let release: (() => void) | undefined;
  const { session, calls } = scriptedSession([
    () => Promise.resolve(vmUpdate("1", "enter", "created")),
    () =>
      new Promise((resolve) => {
        release = () => resolve(vmUpdate("2", "modify", "stale"));
      }),
  ]);
  const loop = loopOn(session, cache);
  await loop.start();
  await settle();
  cache.removeVM(VM); // a destroy task's end, read by us
  release!();
  await settle();
  assert.equal(cache.vmProps(VM), undefined);
  assert.equal(calls.filter((c) => c === "RetrievePropertiesEx").length, 0, "nothing to read");
  await loop.stop();
});

test("a VM read by us while the snapshot was taken is read again after it", async () => {
  const cache = new VMCache();
  let release: (() => void) | undefined;
  const { session, calls } = scriptedSession(
    [
      () =>
        new Promise((resolve) => {
          release = () => resolve(vmUpdate("1", "enter", "snapshot"));
        }),
    ],
    readNow,
  );
  const loop = loopOn(session, cache);
  const started = loop.start();
  await settle();
  cache.upsertVM(VM, { name: "read after a task" });
  release!();
  await started;
  assert.equal(cache.vmProps(VM)?.name, "current", "neither the snapshot nor our read, but now");
  assert.equal(calls.filter((c) => c === "RetrievePropertiesEx").length, 1);
  await loop.stop();
});

// The vSphere update loop against a scripted session: a long poll that times out on the client
// is a stall (new collector, cache kept in use), two failures in a row are an outage.
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

/** A session whose WaitForUpdatesEx answers from `polls` in turn, then waits until cancelled. */
function scriptedSession(polls: Poll[]) {
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

function loopOn(session: VSphereSession) {
  return new UpdateLoop(session, new VMCache(), pino({ level: "silent" }), {
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

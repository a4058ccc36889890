// Placement lookups are memoized, and lookups of one path at once share one vCenter call: a
// burst of new servers on every worker must not ask FindByInventoryPath once per worker.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Inventory } from "../../src/vsphere/inventory.js";
import type { VSphereSession } from "../../src/vsphere/session.js";
import { MoRef } from "../../src/vsphere/xml.js";

function session(found: boolean) {
  const calls: string[] = [];
  const s = {
    serviceContent: async () => ({ searchIndex: new MoRef("SearchIndex", "SearchIndex") }),
    invoke: async (method: string, _obj: MoRef, args: { inventoryPath: string }) => {
      calls.push(`${method} ${args.inventoryPath}`);
      await new Promise((r) => setTimeout(r, 5));
      return found ? new MoRef("Datacenter", "datacenter-2") : undefined;
    },
  } as unknown as VSphereSession;
  return { s, calls };
}

test("8 lookups of one path at once: one FindByInventoryPath, all get its answer", async () => {
  const { s, calls } = session(true);
  const inv = new Inventory(s);
  const dcs = await Promise.all(Array.from({ length: 8 }, () => inv.datacenter("DC0")));
  assert.deepEqual(calls, ["FindByInventoryPath DC0"]);
  assert.ok(dcs.every((dc) => dc.value === "datacenter-2"));
  await inv.datacenter("DC0");
  assert.equal(calls.length, 1, "memoized afterwards");
});

test("a missing object is shared while asked, then asked again", async () => {
  const { s, calls } = session(false);
  const inv = new Inventory(s);
  const all = await Promise.allSettled([inv.datacenter("DC9"), inv.datacenter("DC9")]);
  assert.ok(all.every((r) => r.status === "rejected"));
  assert.equal(calls.length, 1);
  await assert.rejects(inv.datacenter("DC9"));
  assert.equal(calls.length, 2, "not memoized: it may appear");
});

test("a lookup in flight when the memo is invalidated is not remembered, nor shared after", async () => {
  const { s, calls } = session(true);
  const inv = new Inventory(s);
  const early = inv.datacenter("DC0");
  inv.invalidate(); // e.g. a create failed: the placement object may be gone
  const late = inv.datacenter("DC0");
  await new Promise((r) => setTimeout(r, 1)); // both asked; neither answered (5 ms)
  assert.equal(calls.length, 2, "asked again, not joined to the stale lookup");
  await Promise.all([early, late]);
  await inv.datacenter("DC0");
  assert.equal(calls.length, 2, "the lookup begun after the invalidate is remembered");
  inv.invalidate();
  const again = inv.datacenter("DC0");
  inv.invalidate();
  await again;
  await inv.datacenter("DC0");
  assert.equal(calls.length, 4, "an answer begun before the last invalidate is not kept");
});

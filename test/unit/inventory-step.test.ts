// The inventory steps with an in-memory tagging service and custom attributes: what is resolved
// before the VM exists, what is attached, detached and set afterwards, and that a class vsop
// cannot honour fails by reason with nothing changed.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VMRecord } from "../../src/vsphere/vcenter.js";
import { VSphereFault } from "../../src/vsphere/errors.js";
import { TaggingError, type Tag, type TagCategory } from "../../src/vsphere/tagging.js";
import {
  desiredTags,
  inventorySteps,
  RECHECK_MS,
  sameTags,
  type InventoryPort,
  type TagService,
} from "../../src/reconcile/steps/inventory-step.js";
import { StepError } from "../../src/errors.js";
import { parseHostname } from "../../src/naming/hostname.js";
import { stepContext } from "../support/step-fakes.js";

class FakeTagging implements TagService {
  readonly categories = new Map<string, TagCategory>();
  readonly tagsById = new Map<string, Tag>();
  readonly attachedTo = new Map<string, Set<string>>();
  /** Creations vCenter refuses (403). */
  denyCreate = false;
  readonly calls: string[] = [];
  private n = 0;

  addCategory(name: string): TagCategory {
    const c: TagCategory = {
      id: `cat-${++this.n}`,
      name,
      cardinality: "MULTIPLE",
      associableTypes: [],
    };
    this.categories.set(c.id, c);
    return c;
  }
  addTag(categoryId: string, name: string): Tag {
    const t = { id: `tag-${++this.n}`, name, categoryId };
    this.tagsById.set(t.id, t);
    return t;
  }
  category = async (name: string) => [...this.categories.values()].find((c) => c.name === name);
  createCategory = async (name: string, cardinality: "SINGLE" | "MULTIPLE") => {
    this.calls.push(`createCategory ${name} ${cardinality}`);
    if (this.denyCreate) throw new TaggingError("CreateCategory", 403, "unauthorized");
    return { ...this.addCategory(name), cardinality };
  };
  tags = async (categoryId: string) =>
    [...this.tagsById.values()].filter((t) => t.categoryId === categoryId);
  tag = async (id: string) => this.tagsById.get(id);
  createTag = async (categoryId: string, name: string) => {
    this.calls.push(`createTag ${name}`);
    if (this.denyCreate) throw new TaggingError("CreateTag", 403, "unauthorized");
    return this.addTag(categoryId, name);
  };
  invalidate = () => undefined;
  attached = async (vm: string) => [...(this.attachedTo.get(vm) ?? [])];
  attach = async (id: string, vm: string) => {
    this.calls.push(`attach ${this.tagsById.get(id)!.name}`);
    this.attachedTo.set(vm, new Set([...(this.attachedTo.get(vm) ?? []), id]));
  };
  detach = async (id: string, vm: string) => {
    this.calls.push(`detach ${this.tagsById.get(id)!.name}`);
    this.attachedTo.get(vm)?.delete(id);
  };
  /** "category/name" of the tags on a VM, sorted. */
  on(vm: string): string[] {
    return [...(this.attachedTo.get(vm) ?? [])]
      .map((id) => this.tagsById.get(id)!)
      .map((t) => `${this.categories.get(t.categoryId)!.name}/${t.name}`)
      .sort();
  }
}

class FakeInventory implements InventoryPort {
  tagging = new FakeTagging();
  vm: VMRecord | undefined;
  fields = new Map<string, number>();
  values = new Map<number, string>();
  denyFields = false;
  setCalls: string[] = [];
  synced = () => true;
  lastError = () => undefined;
  findByOwnerUID = () => this.vm;
  customFieldKeys = async () => new Map(this.fields);
  addCustomField = async (name: string) => {
    if (this.denyFields) throw new VSphereFault("NoPermission", "AddCustomFieldDef", "denied");
    const key = this.fields.size + 100;
    this.fields.set(name, key);
    return key;
  };
  customValues = async () => new Map(this.values);
  setCustomField = async (_vm: string, key: number, value: string) => {
    this.setCalls.push(`${key}=${value}`);
    this.values.set(key, value);
  };
}

function setup(inventory: Record<string, unknown> | undefined) {
  const fake = new FakeInventory();
  let clock = 1_000_000;
  const steps = inventorySteps({ get: async () => fake }, () => clock);
  const ctx = stepContext({}, inventory ? { inventory } : {});
  ctx.parts = parseHostname(ctx.vs.spec.hostname);
  return {
    fake,
    steps,
    ctx,
    advance: (ms: number) => (clock += ms),
    createVM: () => {
      fake.vm = { moRef: "vm-7", name: "web-prod-1" } as VMRecord;
      ctx.status.vm = { moRef: "vm-7" };
    },
  };
}

test("desired tags: apptype and environment from the hostname, then the class's, no duplicates", () => {
  const { ctx } = setup({
    tags: [
      { category: "team", name: "payments" },
      { category: "apptype", name: "web" },
    ],
  });
  assert.deepEqual(desiredTags(ctx), [
    { category: "apptype", name: "web" },
    { category: "environment", name: "prod" },
    { category: "team", name: "payments" },
  ]);
  assert.deepEqual(desiredTags(setup(undefined).ctx), [], "no inventory section: no tags");
  assert.ok(
    sameTags(
      [
        { category: "a", name: "b" },
        { category: "c", name: "d" },
      ],
      [
        { category: "c", name: "d" },
        { category: "a", name: "b" },
      ],
    ),
  );
  assert.ok(!sameTags([{ category: "a", name: "b" }], [{ category: "a", name: "c" }]));
});

test("before the VM: vsop's categories created (single), missing tags created, attributes defined", async () => {
  const { fake, steps, ctx } = setup({
    tags: [{ category: "team", name: "payments" }],
    attributes: { owner: "payments" },
  });
  fake.tagging.addCategory("team");
  assert.deepEqual(await steps.check.run(ctx), { done: true });
  assert.deepEqual(fake.tagging.calls, [
    "createCategory apptype SINGLE",
    "createCategory environment SINGLE",
    "createTag web",
    "createTag prod",
    "createTag payments",
  ]);
  assert.ok(fake.fields.has("owner"));
  assert.deepEqual(fake.tagging.on("vm-7"), [], "nothing attached before the VM exists");
});

test("an unknown category of the class: TagCategoryNotFound before anything is created", async () => {
  const { fake, steps, ctx } = setup({ tags: [{ category: "nosuch", name: "x" }] });
  await assert.rejects(steps.check.run(ctx), (err: StepError) => {
    assert.equal(err.reason, "TagCategoryNotFound");
    assert.equal(err.options.condition, "VMCreated");
    assert.match(err.message, /"nosuch".*does not exist/);
    return true;
  });
  assert.deepEqual(fake.tagging.calls, [], "not even vsop's own categories were created");
});

test("vsop's category missing and its creation refused (403): TagCategoryNotFound", async () => {
  const { fake, steps, ctx } = setup({});
  fake.tagging.denyCreate = true;
  await assert.rejects(steps.check.run(ctx), (err: StepError) => {
    assert.equal(err.reason, "TagCategoryNotFound");
    assert.match(err.message, /refused to create it \(HTTP 403/);
    return true;
  });
});

test("a tag whose creation is refused: TagNotFound; an attribute that cannot be defined: CustomAttributeNotFound", async () => {
  const a = setup({});
  a.fake.tagging.addCategory("apptype");
  a.fake.tagging.addCategory("environment");
  a.fake.tagging.denyCreate = true;
  await assert.rejects(a.steps.check.run(a.ctx), (err: StepError) => err.reason === "TagNotFound");

  const b = setup({ attributes: { owner: "x" } });
  b.fake.denyFields = true;
  await assert.rejects(
    b.steps.check.run(b.ctx),
    (err: StepError) => err.reason === "CustomAttributeNotFound",
  );
});

test("after the VM: tags attached and attributes set once, recorded in status; a later reconcile asks nothing", async () => {
  const { fake, steps, ctx, advance, createVM } = setup({
    tags: [{ category: "team", name: "payments" }],
    attributes: { owner: "payments" },
  });
  fake.tagging.addCategory("team");
  createVM();
  await steps.sync.run(ctx);
  assert.deepEqual(fake.tagging.on("vm-7"), ["apptype/web", "environment/prod", "team/payments"]);
  assert.deepEqual(fake.setCalls, ["100=payments"]);
  assert.deepEqual(ctx.status.vm?.attributes, { owner: "payments" });
  assert.equal(ctx.status.vm?.tags?.length, 3);

  const calls = fake.tagging.calls.length;
  await steps.sync.run(ctx);
  assert.equal(fake.tagging.calls.length, calls, "in sync and checked recently: no call");

  // Someone detaches a tag; the periodic recheck puts it back.
  const teamTag = [...fake.tagging.tagsById.values()].find((t) => t.name === "payments")!;
  await fake.tagging.detach(teamTag.id, "vm-7");
  advance(RECHECK_MS + 1);
  await steps.sync.run(ctx);
  assert.deepEqual(fake.tagging.on("vm-7"), ["apptype/web", "environment/prod", "team/payments"]);
});

test("a class change: the dropped tag and attribute are removed, others' tags are left alone", async () => {
  const { fake, steps, ctx, createVM } = setup({
    tags: [{ category: "team", name: "payments" }],
    attributes: { owner: "payments" },
  });
  const team = fake.tagging.addCategory("team");
  const foreign = fake.tagging.addTag(fake.tagging.addCategory("backup").id, "daily");
  createVM();
  await fake.tagging.attach(foreign.id, "vm-7");
  await steps.sync.run(ctx);
  ctx.cls = {
    ...ctx.cls,
    spec: { ...ctx.cls.spec, inventory: { tags: [{ category: "team", name: "cards" }] } },
  };
  await steps.sync.run(ctx);
  assert.deepEqual(fake.tagging.on("vm-7"), [
    "apptype/web",
    "backup/daily",
    "environment/prod",
    "team/cards",
  ]);
  assert.ok(fake.tagging.calls.includes("detach payments"));
  assert.ok(!fake.tagging.calls.includes("detach daily"));
  assert.equal(fake.values.get(100), "", "the dropped attribute is cleared");
  assert.equal(ctx.status.vm?.attributes, undefined);
  assert.ok(
    (await fake.tagging.tags(team.id)).some((t) => t.name === "payments"),
    "tag kept",
  );
});

test("a class change to an unknown category after creation: nothing detached or attached", async () => {
  const { fake, steps, ctx, createVM } = setup({ tags: [{ category: "team", name: "payments" }] });
  fake.tagging.addCategory("team");
  createVM();
  await steps.sync.run(ctx);
  const before = fake.tagging.on("vm-7");
  const calls = fake.tagging.calls.length;
  ctx.cls = {
    ...ctx.cls,
    spec: { ...ctx.cls.spec, inventory: { tags: [{ category: "nosuch", name: "x" }] } },
  };
  await assert.rejects(steps.sync.run(ctx), (err: StepError) => {
    assert.equal(err.reason, "TagCategoryNotFound");
    assert.equal(err.options.condition, undefined, "the VM exists: Ready only");
    return true;
  });
  assert.deepEqual(fake.tagging.on("vm-7"), before);
  assert.equal(fake.tagging.calls.length, calls);
});

test("no inventory section: neither step talks to vCenter", async () => {
  const { steps, ctx } = setup(undefined);
  const pool = {
    get: async () => {
      throw new Error("must not connect");
    },
  };
  const quiet = inventorySteps(pool);
  ctx.status.vm = { moRef: "vm-7" };
  assert.deepEqual(await quiet.check.run(ctx), { done: true });
  assert.deepEqual(await quiet.sync.run(ctx), { done: true });
  assert.ok(steps);
});

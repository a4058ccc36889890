// Tags and custom attributes on a server's VM (the class's `inventory`): its inventory.tags and,
// from the hostname, apptype/<apptype> and environment/<environment> (vsop creates these two
// single-cardinality categories when missing). Two steps share this module:
// - `inventory-check`, before the VM step: while there is no VM yet, every tag and attribute is
//   resolved (missing tags, vsop's own categories and attribute definitions created), so a class
//   vsop cannot honour fails before anything is created;
// - `inventory`, right after the VM step: attaches/detaches tags and sets attributes until the VM
//   has what the class asks, records that in status.vm.tags/attributes, and re-reads vCenter
//   every RECHECK_MS to put back what someone removed. Tags vsop did not attach are left alone.
// All of these are quick calls (no vCenter task), bounded by the client's request timeouts.
import type { TagRef } from "../../api/types.js";
import { StepError } from "../../errors.js";
import type { HostnameParts } from "../../naming/hostname.js";
import { faultName } from "../../vsphere/errors.js";
import { TaggingError, type TagCategory, type TaggingClient } from "../../vsphere/tagging.js";
import type { VCenter } from "../../vsphere/vcenter.js";
import { DONE, wait, type ReconcileContext, type Step } from "../engine/context.js";
import type { VSpherePort } from "../engine/ports.js";
import { connectedVCenter, ownedVM } from "./vm-step.js";
import { vsphereStepError } from "../engine/vsphere-errors.js";

/** The categories vsop fills from the hostname, created (single cardinality) when missing. */
export const AUTOMATIC_CATEGORIES = ["apptype", "environment"] as const;

/** How often a VM whose tags and attributes are as recorded is compared with vCenter again. */
export const RECHECK_MS = 10 * 60_000;

export type TagService = Pick<
  TaggingClient,
  | "category"
  | "createCategory"
  | "tags"
  | "createTag"
  | "attached"
  | "attach"
  | "detach"
  | "tag"
  | "invalidate"
>;

/** What the inventory steps need of a vCenter client (a fake in unit tests). */
export type InventoryPort = Pick<VSpherePort, "synced" | "lastError" | "findByOwnerUID"> &
  Pick<VCenter, "customFieldKeys" | "addCustomField" | "customValues" | "setCustomField"> & {
    tagging: TagService;
  };

export interface InventoryPool {
  get(cls: ReconcileContext["cls"]): Promise<InventoryPort>;
}

const keyOf = (t: TagRef) => `${t.category}\u0000${t.name}`;

/** The tags the class asks for this server, automatic ones first; none without `inventory`. */
export function desiredTags(ctx: Pick<ReconcileContext, "cls"> & { parts?: HostnameParts }) {
  const inv = ctx.cls.spec.inventory;
  if (!inv) return [];
  const out: TagRef[] = [];
  const seen = new Set<string>();
  const add = (t: TagRef) => {
    if (!t.category || !t.name || seen.has(keyOf(t))) return;
    seen.add(keyOf(t));
    out.push({ category: t.category, name: t.name });
  };
  if (ctx.parts) {
    add({ category: "apptype", name: ctx.parts.apptype });
    add({ category: "environment", name: ctx.parts.environment });
  }
  for (const t of inv.tags ?? []) add(t);
  return out;
}

export const desiredAttributes = (ctx: Pick<ReconcileContext, "cls">): Record<string, string> => ({
  ...(ctx.cls.spec.inventory?.attributes ?? {}),
});

/** Whether two tag lists hold the same tags (order aside). */
export function sameTags(a: TagRef[] | undefined, b: TagRef[] | undefined): boolean {
  const ka = new Set((a ?? []).map(keyOf));
  const kb = new Set((b ?? []).map(keyOf));
  return ka.size === kb.size && [...ka].every((k) => kb.has(k));
}

export function sameAttributes(
  a: Record<string, string> | undefined,
  b: Record<string, string> | undefined,
): boolean {
  const ea = Object.entries(a ?? {});
  return ea.length === Object.keys(b ?? {}).length && ea.every(([k, v]) => b?.[k] === v);
}

const isAutomatic = (category: string) =>
  (AUTOMATIC_CATEGORIES as readonly string[]).includes(category);

/** The tagging service's answer as a reason; anything else as vSphere's. */
function inventoryError(err: unknown, vmExists: boolean, tagging: TagService): StepError {
  const opts = vmExists ? {} : { condition: "VMCreated" as const };
  if (err instanceof StepError) return err;
  // A tag or category deleted behind vsop's back: look everything up afresh next time.
  if (err instanceof TaggingError && err.status === 404) tagging.invalidate();
  if (err instanceof TaggingError)
    return new StepError(
      "VSphereError",
      `vCenter's tagging service refused ${err.operation} (HTTP ${err.status}${err.type ? `, ${err.type}` : ""}); vsop retries.`,
      { ...opts, cause: err },
    );
  return vsphereStepError(err, opts);
}

/**
 * The ids of these tags: categories looked up (apptype and environment created when missing),
 * then tags (created when missing). Every category is checked before anything is created.
 */
export async function resolveTags(
  tagging: TagService,
  tags: TagRef[],
  vmExists: boolean,
): Promise<Map<string, string>> {
  const opts = vmExists ? {} : { condition: "VMCreated" as const };
  const categories = new Map<string, TagCategory | undefined>();
  for (const t of tags)
    if (!categories.has(t.category)) categories.set(t.category, await tagging.category(t.category));
  for (const [name, c] of categories)
    if (!c && !isAutomatic(name))
      throw new StepError(
        "TagCategoryNotFound",
        `Tag category "${name}" (the class's inventory.tags) does not exist in vCenter; vsop creates ` +
          `only its own categories (${AUTOMATIC_CATEGORIES.join(", ")}). Create it, or fix inventory.tags. ` +
          "Nothing was tagged.",
        opts,
      );
  for (const [name, c] of categories) {
    if (c) continue;
    try {
      categories.set(name, await tagging.createCategory(name, "SINGLE"));
    } catch (err) {
      if (err instanceof TaggingError && err.denied)
        throw new StepError(
          "TagCategoryNotFound",
          `Tag category "${name}" does not exist in vCenter and vCenter refused to create it ` +
            `(HTTP ${err.status}: vsop's vCenter user may not create tag categories). Create it ` +
            "(single cardinality, for virtual machines) or grant the privilege. Nothing was tagged.",
          { ...opts, cause: err },
        );
      throw err;
    }
  }
  const ids = new Map<string, string>();
  for (const t of tags) {
    const category = categories.get(t.category)!;
    let tag = (await tagging.tags(category.id)).find((x) => x.name === t.name);
    if (!tag) {
      try {
        tag = await tagging.createTag(category.id, t.name);
      } catch (err) {
        if (err instanceof TaggingError && err.denied)
          throw new StepError(
            "TagNotFound",
            `Tag "${t.name}" does not exist in category "${t.category}" and vCenter refused to create it ` +
              `(HTTP ${err.status}: vsop's vCenter user may not create tags). Create it or grant the ` +
              "privilege. Nothing was tagged.",
            { ...opts, cause: err },
          );
        throw err;
      }
    }
    ids.set(keyOf(t), tag.id);
  }
  return ids;
}

/** The keys of these custom attributes, defining missing ones. */
async function resolveAttributes(
  vc: InventoryPort,
  names: string[],
  vmExists: boolean,
): Promise<Map<string, number>> {
  if (names.length === 0) return new Map();
  const keys = await vc.customFieldKeys();
  for (const name of names) {
    if (keys.has(name)) continue;
    try {
      keys.set(name, await vc.addCustomField(name));
    } catch (err) {
      if (faultName(err) !== "NoPermission") throw err;
      throw new StepError(
        "CustomAttributeNotFound",
        `Custom attribute "${name}" (the class's inventory.attributes) is not defined in vCenter and ` +
          "vCenter refused to define it (vsop's vCenter user lacks Global.ManageCustomFields). " +
          "Define it for virtual machines, or grant the privilege. Nothing was set.",
        { ...(vmExists ? {} : { condition: "VMCreated" as const }), cause: err },
      );
    }
  }
  return keys;
}

export function inventorySteps(pool: InventoryPool, now: () => number = Date.now) {
  /** When each server's VM was last compared with vCenter (by UID), in this process. */
  const checked = new Map<string, number>();

  const check: Step = {
    name: "inventory-check",
    async run(ctx) {
      const tags = desiredTags(ctx);
      const attributes = Object.keys(desiredAttributes(ctx));
      if (tags.length === 0 && attributes.length === 0) return DONE;
      // A VM is being created: the resolution was done before it was asked for.
      if (ctx.status.vm?.task) return DONE;
      const vc = await connectedVCenter(pool, ctx);
      if (!vc) return wait(2, "Creating", "ConnectingToVCenter", "Connecting to vCenter.");
      if (ownedVM(vc, ctx)) return DONE;
      try {
        await resolveTags(vc.tagging, tags, false);
        await resolveAttributes(vc, attributes, false);
      } catch (err) {
        throw inventoryError(err, false, vc.tagging);
      }
      return DONE;
    },
  };

  const sync: Step = {
    name: "inventory",
    async run(ctx) {
      const tags = desiredTags(ctx);
      const attributes = desiredAttributes(ctx);
      const vmStatus = ctx.status.vm ?? {};
      const uid = ctx.vs.metadata.uid!;
      const recorded =
        sameTags(vmStatus.tags, tags) && sameAttributes(vmStatus.attributes, attributes);
      const last = checked.get(uid);
      if (recorded && last !== undefined && now() - last < RECHECK_MS) return DONE;
      if (recorded && tags.length === 0 && Object.keys(attributes).length === 0) return DONE;
      const vc = await connectedVCenter(pool, ctx);
      if (!vc) return wait(2, "Configuring", "ConnectingToVCenter", "Connecting to vCenter.");
      const vm = ownedVM(vc, ctx);
      if (!vm) return DONE; // the VM step reports it
      try {
        await syncTags(vc.tagging, ctx, vm.moRef, tags);
        await syncAttributes(vc, ctx, vm.moRef, attributes);
      } catch (err) {
        checked.delete(uid);
        throw inventoryError(err, true, vc.tagging);
      }
      checked.set(uid, now());
      return DONE;
    },
    finalize(ctx) {
      // Tags and attributes go with the VM (or stay on a retained one); only the memo goes.
      checked.delete(ctx.vs.metadata.uid!);
      return Promise.resolve(DONE);
    },
  };

  return { check, sync };
}

/** Detaches the tags vsop attached and the class no longer asks for, then attaches the missing. */
async function syncTags(
  tagging: TagService,
  ctx: ReconcileContext,
  vm: string,
  tags: TagRef[],
): Promise<void> {
  const ids = await resolveTags(tagging, tags, true);
  const want = new Set(ids.values());
  const attached = new Set(await tagging.attached(vm));
  const stale = await staleTagIds(tagging, ctx.status.vm?.tags ?? [], tags);
  const detached: string[] = [];
  for (const [key, id] of stale)
    if (attached.has(id) && !want.has(id)) {
      await tagging.detach(id, vm);
      detached.push(key.replace("\u0000", "/"));
    }
  const added: string[] = [];
  for (const t of tags) {
    const id = ids.get(keyOf(t))!;
    if (attached.has(id)) continue;
    await tagging.attach(id, vm);
    added.push(`${t.category}/${t.name}`);
  }
  if (added.length || detached.length)
    ctx.log.info({ vm, attached: added, detached }, "VM tags synced");
  ctx.status.vm = { ...ctx.status.vm, tags: tags.length ? tags : undefined };
}

/** Ids of tags vsop recorded earlier that the class no longer asks for (gone ones skipped). */
async function staleTagIds(
  tagging: TagService,
  before: TagRef[],
  now: TagRef[],
): Promise<Map<string, string>> {
  const keep = new Set(now.map(keyOf));
  const out = new Map<string, string>();
  for (const t of before) {
    if (keep.has(keyOf(t))) continue;
    const category = await tagging.category(t.category);
    const tag = category && (await tagging.tags(category.id)).find((x) => x.name === t.name);
    if (tag) out.set(keyOf(t), tag.id);
  }
  return out;
}

/** Sets the attributes the class asks for and clears those vsop set that it no longer does. */
async function syncAttributes(
  vc: InventoryPort,
  ctx: ReconcileContext,
  vm: string,
  attributes: Record<string, string>,
): Promise<void> {
  const previous = ctx.status.vm?.attributes ?? {};
  const names = [...new Set([...Object.keys(attributes), ...Object.keys(previous)])];
  if (names.length === 0) return;
  const keys = await resolveAttributes(vc, Object.keys(attributes), true);
  const all = Object.keys(previous).some((n) => !keys.has(n)) ? await vc.customFieldKeys() : keys;
  const current = await vc.customValues(vm);
  const changed: string[] = [];
  for (const name of names) {
    const key = keys.get(name) ?? all.get(name);
    if (key === undefined) continue; // a removed attribute whose definition is gone
    const value = attributes[name] ?? "";
    if ((current.get(key) ?? "") === value) continue;
    await vc.setCustomField(vm, key, value);
    changed.push(name);
  }
  if (changed.length) ctx.log.info({ vm, attributes: changed }, "VM custom attributes set");
  ctx.status.vm = {
    ...ctx.status.vm,
    attributes: Object.keys(attributes).length ? attributes : undefined,
  };
}

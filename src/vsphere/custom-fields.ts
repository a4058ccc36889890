// Custom attributes (vim25 CustomFieldsManager): the definitions by name, a VM's values, SetField.
// SetField and AddCustomFieldDef return at once (no task).
import type { VSphereSession } from "./session.js";
import { MoRef } from "./xml.js";
import { isObject, items, num, str } from "./nodes.js";
import { retrieveOne } from "./properties.js";
import { faultName } from "./errors.js";
import { VM_TYPE } from "./vms.js";

async function manager(session: VSphereSession): Promise<MoRef> {
  const m = (await session.serviceContent()).customFieldsManager;
  if (!m) throw new Error("this vCenter has no CustomFieldsManager");
  return m;
}

/** Custom attribute keys by name, for VMs (definitions for every type included). */
export async function customFieldKeys(session: VSphereSession): Promise<Map<string, number>> {
  const props = await retrieveOne(session, await manager(session), ["field"]);
  const out = new Map<string, number>();
  for (const f of items(props.field)) {
    if (!isObject(f)) continue;
    const type = str(f.managedObjectType) ?? "";
    const name = str(f.name);
    const key = num(f.key);
    if (name === undefined || key === undefined || (type !== "" && type !== VM_TYPE)) continue;
    out.set(name, key);
  }
  return out;
}

/** Defines a VM custom attribute; one defined meanwhile (DuplicateName) is fine. */
export async function addCustomField(session: VSphereSession, name: string): Promise<number> {
  try {
    const def = await session.invoke("AddCustomFieldDef", await manager(session), {
      name,
      moType: VM_TYPE,
    });
    const key = isObject(def) ? num(def.key) : undefined;
    if (key !== undefined) return key;
  } catch (err) {
    if (faultName(err) !== "DuplicateName") throw err;
  }
  const key = (await customFieldKeys(session)).get(name);
  if (key === undefined) throw new Error(`custom attribute ${name} not found after creating it`);
  return key;
}

/** A VM's custom attribute values by key. */
export async function customValues(
  session: VSphereSession,
  vm: string,
): Promise<Map<number, string>> {
  const props = await retrieveOne(session, new MoRef(VM_TYPE, vm), ["customValue"]);
  const out = new Map<number, string>();
  for (const v of items(props.customValue)) {
    if (!isObject(v)) continue;
    const key = num(v.key);
    if (key !== undefined) out.set(key, str(v.value) ?? "");
  }
  return out;
}

export async function setCustomField(
  session: VSphereSession,
  vm: string,
  key: number,
  value: string,
): Promise<void> {
  await session.invoke("SetField", await manager(session), {
    entity: new MoRef(VM_TYPE, vm),
    key: String(key),
    value,
  });
}

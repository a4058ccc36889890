// PropertyCollector reads: many objects' properties in one paged request instead of one per object.
import type { VSphereSession } from "./session.js";
import { MoRef, field, list, text, type Node } from "./xml.js";

export interface ObjectContent {
  obj: MoRef;
  props: Record<string, Node>;
}

export function propertySpec(type: string, pathSet: string[]) {
  return { type, all: false, pathSet };
}

/**
 * An ObjectSpec that walks the inventory from the root folder down to every VM and port group:
 * folders, datacenters' vm and network folders, and vApps. Long-lived filters use this instead
 * of a ContainerView: vcsim deadlocks when a filter over a ContainerView is collected while VMs
 * are being created (a lock-order inversion between the view and the filter). For the same
 * reason tasks are not followed through recentTask (TaskManager's, a folder's or a VM's): under
 * a burst of tasks vcsim's WaitForUpdatesEx then hangs until the client gives up (60 s).
 */
export function inventoryObjectSpec(root: MoRef) {
  const ref = (name: string) => ({ _type: "SelectionSpec", name });
  const hop = (name: string, type: string, path: string, next: string[]) => ({
    _type: "TraversalSpec",
    name,
    type,
    path,
    skip: false,
    selectSet: next.map(ref),
  });
  return {
    obj: root,
    skip: false,
    selectSet: [
      hop("folderChildren", "Folder", "childEntity", [
        "folderChildren",
        "dcVms",
        "dcNetworks",
        "vAppVms",
      ]),
      hop("dcVms", "Datacenter", "vmFolder", ["folderChildren"]),
      hop("dcNetworks", "Datacenter", "networkFolder", ["folderChildren"]),
      hop("vAppVms", "VirtualApp", "vm", []),
    ],
  };
}

/** An ObjectSpec that walks a ContainerView's `view` property. */
export function viewObjectSpec(view: MoRef) {
  return {
    obj: view,
    skip: true,
    selectSet: [
      { _type: "TraversalSpec", name: "view", type: "ContainerView", path: "view", skip: false },
    ],
  };
}

function toObjectContent(node: Node): ObjectContent {
  const props: Record<string, Node> = {};
  for (const p of list(field(node, "propSet"))) {
    const name = text(field(p, "name"));
    if (name) props[name] = field(p, "val") ?? "";
  }
  return { obj: field(node, "obj") as MoRef, props };
}

/** RetrievePropertiesEx followed by ContinueRetrievePropertiesEx until the token runs out. */
export async function retrieve(
  session: VSphereSession,
  specSet: { propSet: unknown[]; objectSet: unknown[] },
): Promise<ObjectContent[]> {
  const pc = (await session.serviceContent()).propertyCollector;
  const out: ObjectContent[] = [];
  let result = await session.invoke("RetrievePropertiesEx", pc, {
    specSet,
    options: { maxObjects: 500 },
  });
  for (;;) {
    out.push(...list(field(result, "objects")).map(toObjectContent));
    const token = text(field(result, "token"));
    if (!token) return out;
    result = await session.invoke("ContinueRetrievePropertiesEx", pc, { token });
  }
}

/** One object's properties. */
export async function retrieveOne(
  session: VSphereSession,
  obj: MoRef,
  pathSet: string[],
): Promise<Record<string, Node>> {
  const [content] = await retrieve(session, {
    propSet: [propertySpec(obj.type, pathSet)],
    objectSet: [{ obj, skip: false }],
  });
  return content?.props ?? {};
}

/** A ContainerView of `types` under `container`, recursive. Destroy it when done. */
export async function createContainerView(
  session: VSphereSession,
  container: MoRef,
  types: string[],
): Promise<MoRef> {
  const vm = (await session.serviceContent()).viewManager;
  return (await session.invoke("CreateContainerView", vm, {
    container,
    type: types,
    recursive: true,
  })) as MoRef;
}

/** All objects of `type` under `container` with the given properties, in one paged read. */
export async function listObjects(
  session: VSphereSession,
  container: MoRef,
  type: string,
  pathSet: string[],
): Promise<ObjectContent[]> {
  const view = await createContainerView(session, container, [type]);
  try {
    return await retrieve(session, {
      propSet: [propertySpec(type, pathSet)],
      objectSet: [viewObjectSpec(view)],
    });
  } finally {
    await session.invoke("DestroyView", view).catch(() => undefined);
  }
}

// The in-memory copy of vCenter's VMs (and port group names) that reconcilers read instead of
// asking vCenter: fed by PropertyCollector updates and by refreshes after our own tasks.
import { MoRef, field, list, text, type Node } from "./xml.js";
import { isObject, items, normalize, str, type NodeObject } from "./nodes.js";
import { toVMRecord, VM_PROPERTIES, type VMRecord } from "./vms.js";

export const PORTGROUP_PROPERTIES = ["name", "key"];

export interface PropertyChange {
  name: string;
  op: string;
  val?: Node;
}

export interface ObjectUpdate {
  kind: "enter" | "modify" | "leave";
  obj: MoRef;
  changeSet: PropertyChange[];
}

export interface UpdateSet {
  version: string;
  truncated: boolean;
  updates: ObjectUpdate[];
}

/** Decodes a WaitForUpdatesEx result; undefined when the wait timed out without changes. */
export function parseUpdateSet(node: Node): UpdateSet | undefined {
  if (!isObject(node)) return undefined;
  const updates: ObjectUpdate[] = [];
  for (const fu of list(field(node, "filterSet"))) {
    for (const ou of list(field(fu, "objectSet"))) {
      const obj = field(ou, "obj");
      const kind = text(field(ou, "kind"));
      if (!(obj instanceof MoRef) || (kind !== "enter" && kind !== "modify" && kind !== "leave"))
        continue;
      const changeSet = list(field(ou, "changeSet")).map((c) => ({
        name: text(field(c, "name")) ?? "",
        op: text(field(c, "op")) ?? "assign",
        val: field(c, "val"),
      }));
      updates.push({ kind, obj, changeSet });
    }
  }
  return {
    version: text(field(node, "version")) ?? "",
    truncated: text(field(node, "truncated")) === "true",
    updates,
  };
}

type Segment = { key: string } | { field: string };

/** Splits the tail of a property path, e.g. `[4000].connectable.connected` or `["guestinfo.x"]`. */
export function pathSegments(tail: string): Segment[] {
  const out: Segment[] = [];
  let i = 0;
  while (i < tail.length) {
    if (tail[i] === "[") {
      let key = "";
      if (tail[i + 1] === '"') {
        i += 2;
        while (i < tail.length && tail[i] !== '"') {
          if (tail[i] === "\\") i++;
          key += tail[i++] ?? "";
        }
        i += 2; // closing quote and bracket
      } else {
        const end = tail.indexOf("]", i);
        key = tail.slice(i + 1, end < 0 ? undefined : end);
        i = end < 0 ? tail.length : end + 1;
      }
      out.push({ key });
    } else if (tail[i] === ".") {
      i++;
    } else {
      let name = "";
      while (i < tail.length && tail[i] !== "." && tail[i] !== "[") name += tail[i++];
      out.push({ field: name });
    }
  }
  return out;
}

const REMOVE = new Set(["remove", "indirectRemove"]);

function applyAt(
  node: Node | undefined,
  segs: Segment[],
  op: string,
  val: Node | undefined,
): Node | undefined {
  const [seg, ...rest] = segs;
  if (!seg) return REMOVE.has(op) ? undefined : val;
  if ("key" in seg) {
    const arr = [...items(node)];
    const idx = arr.findIndex((el) => isObject(el) && str(el.key) === seg.key);
    if (rest.length === 0) {
      if (REMOVE.has(op)) return idx < 0 ? arr : arr.filter((_, j) => j !== idx);
      if (val === undefined) return arr;
      if (idx < 0) arr.push(val);
      else arr[idx] = val;
      return arr;
    }
    if (idx >= 0) {
      const next = applyAt(arr[idx], rest, op, val);
      if (next !== undefined) arr[idx] = next;
    }
    return arr;
  }
  const obj: NodeObject = isObject(node) ? { ...node } : {};
  const next = applyAt(obj[seg.field], rest, op, val);
  if (next === undefined) delete obj[seg.field];
  else obj[seg.field] = next;
  return obj;
}

function pick(val: Node | undefined, path: string): Node | undefined {
  let cur = val;
  for (const p of path.split(".")) cur = isObject(cur) ? cur[p] : undefined;
  return cur;
}

/**
 * Applies one PropertyChange to an object's tracked properties: the property itself, a part of
 * it (`config.hardware.device[4000].connectable`, `config.extraConfig["guestinfo.x"]`), or a
 * parent of tracked properties (`config`).
 */
export function applyChange(
  props: Record<string, Node>,
  tracked: string[],
  change: PropertyChange,
): void {
  const { name, op } = change;
  const val = normalize(change.val);
  const base = tracked.find(
    (p) => name === p || name.startsWith(`${p}.`) || name.startsWith(`${p}[`),
  );
  if (!base) {
    for (const p of tracked.filter((t) => t.startsWith(`${name}.`))) {
      const sub = REMOVE.has(op) ? undefined : normalize(pick(val, p.slice(name.length + 1)));
      if (sub === undefined) delete props[p];
      else props[p] = sub;
    }
    return;
  }
  const next = applyAt(props[base], pathSegments(name.slice(base.length)), op, val);
  if (next === undefined) delete props[base];
  else props[base] = next;
}

function propsOf(changeSet: PropertyChange[], tracked: string[]): Record<string, Node> {
  const props: Record<string, Node> = {};
  for (const c of changeSet) applyChange(props, tracked, c);
  return props;
}

/** VMs and port groups by moRef value, with VMRecords built on demand. */
export class VMCache {
  private vms = new Map<string, Record<string, Node>>();
  private portGroups = new Map<string, Record<string, Node>>();
  private pgNames = new Map<string, string>();
  private records = new Map<string, VMRecord>();
  /** Our own reads (upsertVM, removeVM), counted; and the count at each VM's last one. */
  private reads = 0;
  private readAt = new Map<string, number>();
  /**
   * VM moRefs by owner marker, built on first use after any VM changed: a steady fleet's
   * reconciles find their VM without a pass over every VM vCenter has.
   */
  private owners: Map<string, string[]> | undefined;

  private readonly portGroupName = (key: string) => this.pgNames.get(key);

  /** How many of our own reads the cache has taken: a mark for readSince. */
  get readMark(): number {
    return this.reads;
  }

  /**
   * The VMs among `updates` that we read ourselves after `mark`. A batch of updates computed
   * before such a read can be older than it (vcsim queues each change with its value then; the
   * first of a new VM's changes came 4 s after its power-on had ended in a bench run): applied,
   * it would take the VM back to a state the collector will not report again.
   */
  readSince(mark: number, updates: ObjectUpdate[]): Set<string> {
    const out = new Set<string>();
    for (const u of updates)
      if (u.obj.type === "VirtualMachine" && (this.readAt.get(u.obj.value) ?? 0) > mark)
        out.add(u.obj.value);
    return out;
  }

  /** Every VM we read ourselves after `mark`, found or gone. */
  readAfter(mark: number): string[] {
    return [...this.readAt].filter(([, at]) => at > mark).map(([ref]) => ref);
  }

  /** Applies incremental updates from the collector; of the VMs in `skip`, only leaves. */
  apply(updates: ObjectUpdate[], skip?: ReadonlySet<string>): void {
    for (const u of updates) {
      const pg = u.obj.type === "DistributedVirtualPortgroup";
      if (!pg && u.obj.type !== "VirtualMachine") continue;
      // A leave is final whenever it was sent; the rest of a skipped VM's updates is not applied.
      if (!pg && u.kind !== "leave" && skip?.has(u.obj.value)) continue;
      const map = pg ? this.portGroups : this.vms;
      const tracked = pg ? PORTGROUP_PROPERTIES : VM_PROPERTIES;
      if (u.kind === "leave") {
        map.delete(u.obj.value);
        if (!pg) this.readAt.delete(u.obj.value);
      } else if (u.kind === "enter") {
        // We may already hold the VM from our own read after a task; that read is newer than
        // this enter's snapshot, and the modifies that follow the enter apply on top of it.
        if (map.has(u.obj.value)) continue;
        map.set(u.obj.value, propsOf(u.changeSet, tracked));
      } else {
        // A modify of an object we never saw enter cannot give a whole record; wait for enter.
        const props = map.get(u.obj.value);
        if (!props) continue;
        for (const c of u.changeSet) applyChange(props, tracked, c);
      }
      if (pg) this.portGroupsChanged();
      else this.vmChanged(u.obj.value);
    }
  }

  /**
   * Replaces everything with a full snapshot; objects not in it drop out. What we read ourselves
   * while the snapshot was taken is read again by the update loop (readAfter).
   */
  finishResync(snapshot: ObjectUpdate[]): void {
    this.vms.clear();
    this.owners = undefined;
    this.portGroups.clear();
    this.apply(snapshot.filter((u) => u.kind === "enter"));
    this.portGroupsChanged();
    for (const ref of this.readAt.keys()) if (!this.vms.has(ref)) this.readAt.delete(ref);
    this.records.clear();
  }

  /** Stores a VM's freshly read properties. */
  upsertVM(ref: string, props: Record<string, Node>): void {
    const normalized: Record<string, Node> = {};
    for (const [k, v] of Object.entries(props)) {
      const n = normalize(v);
      if (n !== undefined) normalized[k] = n;
    }
    this.vms.set(ref, normalized);
    this.vmChanged(ref);
    this.readAt.set(ref, ++this.reads);
  }

  removeVM(ref: string): void {
    this.vms.delete(ref);
    this.vmChanged(ref);
    this.readAt.set(ref, ++this.reads);
  }

  vmProps(ref: string): Readonly<Record<string, Node>> | undefined {
    return this.vms.get(ref);
  }

  get(ref: string): VMRecord | undefined {
    let r = this.records.get(ref);
    if (r) return r;
    const props = this.vms.get(ref);
    if (!props) return undefined;
    r = toVMRecord(ref, props, this.portGroupName);
    this.records.set(ref, r);
    return r;
  }

  /** The VMs carrying this owner marker (vsop.owner-uid): one, unless one was cloned. */
  ownedBy(uid: string): VMRecord[] {
    if (!this.owners) {
      this.owners = new Map();
      for (const ref of this.vms.keys()) {
        const owner = this.get(ref)!.ownerUID;
        if (!owner) continue;
        const refs = this.owners.get(owner);
        if (refs) refs.push(ref);
        else this.owners.set(owner, [ref]);
      }
    }
    return (this.owners.get(uid) ?? []).map((ref) => this.get(ref)!);
  }

  all(): VMRecord[] {
    return [...this.vms.keys()].map((ref) => this.get(ref)!);
  }

  get size(): number {
    return this.vms.size;
  }

  private vmChanged(ref: string): void {
    this.records.delete(ref);
    this.owners = undefined;
  }

  private portGroupsChanged(): void {
    this.pgNames.clear();
    for (const [ref, props] of this.portGroups)
      this.pgNames.set(str(props.key) ?? ref, str(props.name) ?? ref);
    this.records.clear();
  }
}

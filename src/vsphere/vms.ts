// Virtual machines as vsop sees them: the cached properties, the VMRecord built from them, and the
// config specs for CreateVM_Task, CloneVM_Task and ReconfigVM_Task.
import { MoRef, TypedText, type Node } from "./xml.js";
import { bool, get, isObject, items, moRef, num, str, type NodeObject } from "./nodes.js";
import {
  bootOrder,
  cdromRecords,
  deviceChange,
  deviceList,
  diskRecords,
  isEthernet,
  newDisk,
  newNic,
  newScsiController,
  nicRecords,
  type CdromRecord,
  type DiskRecord,
  type NetworkBacking,
  type NicRecord,
  type ScsiKind,
} from "./devices.js";

export const OWNER_UID_KEY = "vsop.owner-uid";
export const OWNER_KEY = "vsop.owner";
/**
 * extraConfig `vsop.disk.<name>` = the slot (e.g. scsi0:1) of the data disk vsop added under that
 * name: set in the same reconfiguration that adds the disk, so a retry never adds it twice.
 */
export const DISK_MARKER_PREFIX = "vsop.disk.";

/** The data disks vsop added, by name, as the VM's extraConfig records them (slot per name). */
export function diskMarkers(vm: Pick<VMRecord, "extraConfig">): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(vm.extraConfig))
    if (k.startsWith(DISK_MARKER_PREFIX) && v) out.set(k.slice(DISK_MARKER_PREFIX.length), v);
  return out;
}

/**
 * The system disk: the lowest-keyed disk no marker names (created with the VM, or the template's
 * first). Not the first in device order: vcsim moves an edited device to the end of the list.
 */
export function systemDisk(vm: Pick<VMRecord, "disks" | "extraConfig">): DiskRecord | undefined {
  const marked = new Set(diskMarkers(vm).values());
  return vm.disks
    .filter((d) => !d.slot || !marked.has(d.slot))
    .reduce<DiskRecord | undefined>((low, d) => (low && low.key <= d.key ? low : d), undefined);
}

/** The properties the cache keeps for every VM. */
/** The managed object type of a VM. */
export const VM_TYPE = "VirtualMachine";

export const VM_PROPERTIES = [
  "name",
  "parent",
  "config.instanceUuid",
  "config.template",
  "config.hardware.numCPU",
  "config.hardware.memoryMB",
  "config.cpuHotAddEnabled",
  "config.memoryHotAddEnabled",
  "config.hardware.device",
  "config.extraConfig",
  "config.bootOptions",
  // Not read: every reconfigure changes it, so each one wakes the VM's owner (vcsim does not
  // report all the properties a reconfigure changes).
  "config.changeVersion",
  "runtime.powerState",
  // Whether a soft shutdown or reboot can be asked of the guest.
  "guest.toolsRunningStatus",
];

export interface Placement {
  datacenter: string;
  cluster?: string;
  /** Inventory path relative to the datacenter's host folder (e.g. "DC0_C0/Resources/web"), or a name. */
  resourcePool?: string;
  datastore: string;
  /** SPBM storage policy name: the new VM and its disk get it (vmProfile). */
  storagePolicy?: string;
  /** VM folder path relative to the datacenter's vm folder. */
  folder?: string;
}

export interface VMRecord {
  moRef: string;
  name: string;
  instanceUUID?: string;
  powerState: string;
  /** VMware Tools run in the guest (guest.toolsRunningStatus): it can shut down or reboot softly. */
  toolsRunning: boolean;
  ownerUID?: string;
  owner?: string;
  template: boolean;
  /** The parent folder's moRef. */
  folder?: string;
  cpus: number;
  memoryMiB: number;
  cpuHotAddEnabled: boolean;
  memoryHotAddEnabled: boolean;
  nics: NicRecord[];
  cdroms: CdromRecord[];
  disks: DiskRecord[];
  /** Only keys starting with `vsop.` or `guestinfo.`. */
  extraConfig: Record<string, string>;
  /** config.bootOptions.bootOrder as bootOrderSignature() gives it; empty when none is set. */
  bootOrder: string[];
}

export interface NicSpec {
  portGroup: string;
  role: "service" | "boot" | "extra";
}

export interface CreateVMSpec {
  name: string;
  placement: Placement;
  guestId: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** Clone from this VM or template (name, or path relative to the vm folder) when set. */
  template?: string;
  /** Order = device order; the boot NIC comes first in the boot order. */
  nics: NicSpec[];
  /** Adds a CD-ROM and boots from it first. */
  bootFromCdrom?: boolean;
  /** Must include vsop.owner-uid and vsop.owner. */
  extraConfig: Record<string, string>;
  scsiController?: ScsiKind;
  firmware?: "bios" | "efi";
  /** UEFI Secure Boot (firmware efi). */
  secureBoot?: boolean;
  /** Clone from the template's current snapshot, sharing its disks (child disk backing). */
  linkedClone?: boolean;
  cpuHotAdd?: boolean;
  memoryHotAdd?: boolean;
}

/** A Linked clone was asked of a template (or VM) that has no current snapshot. */
export class TemplateHasNoSnapshot extends Error {
  override name = "TemplateHasNoSnapshot";
  constructor(readonly template: string) {
    super(`template ${template} has no current snapshot to link clones to`);
  }
}

/** What one disk reconfiguration does (startConfigureDisks). */
export interface DiskChanges {
  /** New data disks: thin, in the VM's directory on `datastore`. */
  add: { name: string; sizeGiB: number; datastore: string }[];
  /** Disks to grow, by device key (never shrunk); the name is for logs. */
  grow: { key: number; name: string; sizeGiB: number }[];
  /** Data disks to remove with their files, by name (only disks vsop added under that name). */
  remove: string[];
}

export const gibToKiB = (gib: number) => Math.round(gib * 1024 * 1024);

/** A CreateVMSpec that cannot be sent, e.g. without the owner marks. */
export class InvalidVMSpec extends Error {
  override name = "InvalidVMSpec";
  constructor(
    readonly vm: string,
    readonly reason: string,
  ) {
    super(`VM spec for ${vm} is invalid: ${reason}`);
  }
}

/** The VM does not exist (any more). */
export class VMNotFound extends Error {
  override name = "VMNotFound";
  constructor(readonly moRef: string) {
    super(`VM ${moRef} not found`);
  }
}

/** The VM has no device with that key, or no room for a new one. */
export class DeviceNotFound extends Error {
  override name = "DeviceNotFound";
  constructor(
    readonly moRef: string,
    readonly device: string,
  ) {
    super(`VM ${moRef}: ${device} not found`);
  }
}

/** A reconfiguration succeeded but reading the VM back shows a different state. */
export class VSphereVerifyError extends Error {
  override name = "VSphereVerifyError";
  constructor(
    readonly moRef: string,
    readonly expected: string,
  ) {
    super(`VM ${moRef}: after reconfiguration, expected ${expected}`);
  }
}

export function validateCreateSpec(spec: CreateVMSpec): void {
  const bad = (reason: string) => new InvalidVMSpec(spec.name, reason);
  if (!spec.name) throw bad("name is empty");
  for (const k of [OWNER_UID_KEY, OWNER_KEY])
    if (!spec.extraConfig[k]) throw bad(`extraConfig must carry ${k}`);
  if (!(spec.cpus >= 1) || !Number.isInteger(spec.cpus)) throw bad(`cpus ${spec.cpus}`);
  if (!(spec.memoryMiB >= 4) || !Number.isInteger(spec.memoryMiB))
    throw bad(`memoryMiB ${spec.memoryMiB}`);
  if (!(spec.diskGiB > 0)) throw bad(`diskGiB ${spec.diskGiB}`);
  if (spec.nics.filter((n) => n.role === "boot").length > 1) throw bad("more than one boot NIC");
  if (!spec.template && !spec.guestId) throw bad("guestId is empty");
}

const VISIBLE_EXTRA_CONFIG = /^(vsop|guestinfo)\./;

/** All extraConfig entries of a VM's cached properties. */
export function extraConfigOf(props: Record<string, Node> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ov of items(props?.["config.extraConfig"])) {
    if (!isObject(ov)) continue;
    const key = str(ov.key);
    // An empty string value may decode as a bare typed node.
    if (key) out[key] = str(ov.value) ?? "";
  }
  return out;
}

/** The VMRecord of a VM's cached properties; `portGroupName` maps port group keys to names. */
export function toVMRecord(
  ref: string,
  props: Record<string, Node>,
  portGroupName: (key: string) => string | undefined,
): VMRecord {
  const devices = deviceList(props["config.hardware.device"]);
  const extraConfig = Object.fromEntries(
    Object.entries(extraConfigOf(props)).filter(([k]) => VISIBLE_EXTRA_CONFIG.test(k)),
  );
  return {
    moRef: ref,
    name: str(props.name) ?? "",
    instanceUUID: str(props["config.instanceUuid"]) || undefined,
    powerState: str(props["runtime.powerState"]) ?? "unknown",
    toolsRunning: str(props["guest.toolsRunningStatus"]) === "guestToolsRunning",
    ownerUID: extraConfig[OWNER_UID_KEY],
    owner: extraConfig[OWNER_KEY],
    template: bool(props["config.template"]) ?? false,
    folder: moRef(props.parent)?.value,
    cpus: num(props["config.hardware.numCPU"]) ?? 0,
    memoryMiB: num(props["config.hardware.memoryMB"]) ?? 0,
    cpuHotAddEnabled: bool(props["config.cpuHotAddEnabled"]) ?? false,
    memoryHotAddEnabled: bool(props["config.memoryHotAddEnabled"]) ?? false,
    nics: nicRecords(devices, portGroupName),
    cdroms: cdromRecords(devices),
    disks: diskRecords(devices),
    extraConfig,
    bootOrder: bootOrderSignature(items(get(props["config.bootOptions"], "bootOrder"))),
  };
}

/** The datastore of the VM's system disk ("[LocalDS_0] w/w.vmdk" → LocalDS_0), if it has one. */
export function datastoreOf(vm: Pick<VMRecord, "disks" | "extraConfig">): string | undefined {
  return /^\[([^\]]+)\]/.exec(systemDisk(vm)?.fileName ?? "")?.[1];
}

/** A comparable form of bootOrder entries, e.g. ["Ethernet:4000", "Disk:2000"] or ["Cdrom", …]. */
export function bootOrderSignature(entries: Node[]): string[] {
  return entries.filter(isObject).map((e) => {
    const kind = (str(e._type) ?? "").replace(/^VirtualMachineBootOptionsBootable|Device$/g, "");
    const key = str(e.deviceKey);
    return key ? `${kind}:${key}` : kind;
  });
}

/** A request value: decoded nodes plus TypedText and MoRef, encoded by xml.ts. */
export type SpecObject = { [k: string]: unknown };

/** OptionValues for extraConfig; a "" value removes the key. */
export function optionValues(kv: Record<string, string>): SpecObject[] {
  return Object.entries(kv).map(([key, value]) => ({
    key,
    value: new TypedText("xsd:string", value),
  }));
}

/** The extraConfig entries that change `current` into `want` (absent keys stay as they are). */
export function extraConfigDelta(
  current: Record<string, string>,
  want: Record<string, string>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) {
    if (v === "" ? k in current : current[k] !== v) out[k] = v;
  }
  return out;
}

// Temporary keys for new devices: negative and unique within one spec.
const SCSI_KEY = -100;
const DISK_KEY = -101;
const NIC_KEY_BASE = -200;

function hardware(spec: CreateVMSpec): SpecObject {
  const out: SpecObject = { numCPUs: String(spec.cpus), memoryMB: String(spec.memoryMiB) };
  if (spec.memoryHotAdd !== undefined) out.memoryHotAddEnabled = String(spec.memoryHotAdd);
  if (spec.cpuHotAdd !== undefined) out.cpuHotAddEnabled = String(spec.cpuHotAdd);
  return out;
}

/** The VirtualMachineConfigSpec of CreateVM_Task: SCSI controller, thin disk, vmxnet3 NICs. */
export function createConfigSpec(
  spec: CreateVMSpec,
  datastore: string,
  networks: NetworkBacking[],
): SpecObject {
  const devices = [
    deviceChange("add", newScsiController(SCSI_KEY, spec.scsiController ?? "pvscsi")),
    deviceChange("add", newDisk(DISK_KEY, SCSI_KEY, spec.diskGiB, datastore), "create"),
    ...networks.map((net, i) => deviceChange("add", newNic(NIC_KEY_BASE - i, net))),
  ];
  const out: SpecObject = {
    name: spec.name,
    guestId: spec.guestId,
    files: { vmPathName: `[${datastore}]` },
    ...hardware(spec),
    deviceChange: devices,
    extraConfig: optionValues(spec.extraConfig),
  };
  firmware(spec, out);
  return out;
}

/** Firmware and Secure Boot of a new VM's config (both CreateVM_Task and CloneVM_Task). */
function firmware(spec: CreateVMSpec, config: SpecObject): void {
  if (spec.firmware) config.firmware = spec.firmware;
  if (spec.secureBoot) config.bootOptions = { efiSecureBootEnabled: "true" };
}

/**
 * The VirtualMachineCloneSpec of CloneVM_Task: the template's NICs replaced by ours, its first
 * disk grown to diskGiB when smaller (not for a linked clone: a child disk of a snapshot keeps
 * its parent's size), our extraConfig and firmware; not powered on. `snapshot`: a linked clone
 * of it (createNewChildDiskBacking).
 */
export function cloneSpec(
  spec: CreateVMSpec,
  templateDevices: NodeObject[],
  location: { datastore: MoRef; pool: MoRef },
  networks: NetworkBacking[],
  snapshot?: MoRef,
): SpecObject {
  const changes: NodeObject[] = templateDevices
    .filter(isEthernet)
    .map((nic) => deviceChange("remove", nic));
  changes.push(...networks.map((net, i) => deviceChange("add", newNic(NIC_KEY_BASE - i, net))));
  const disk = templateDevices.find((d) => str(d._type) === "VirtualDisk");
  const wantKiB = Math.round(spec.diskGiB * 1024 * 1024);
  if (!snapshot && disk && (num(disk.capacityInKB) ?? 0) < wantKiB) {
    // Both sizes, consistent: vcsim reads a missing capacityInBytes as 0.
    const grown: NodeObject = {
      ...disk,
      capacityInKB: String(wantKiB),
      capacityInBytes: String(wantKiB * 1024),
    };
    changes.push(deviceChange("edit", grown));
  }
  const config: SpecObject = {
    ...hardware(spec),
    deviceChange: changes,
    extraConfig: optionValues(spec.extraConfig),
  };
  firmware(spec, config);
  return {
    location: {
      datastore: location.datastore,
      ...(snapshot ? { diskMoveType: "createNewChildDiskBacking" } : {}),
      pool: location.pool,
    },
    template: "false",
    config,
    powerOn: "false",
    ...(snapshot ? { snapshot } : {}),
  };
}

/** The boot order a new VM needs, given its real device keys; undefined when none is needed. */
export function bootOptionsFor(spec: CreateVMSpec, record: VMRecord): NodeObject | undefined {
  const bootIndex = spec.nics.findIndex((n) => n.role === "boot");
  if (bootIndex < 0 && !spec.bootFromCdrom) return undefined;
  let ethernetKey: number | undefined;
  if (bootIndex >= 0) {
    const want = spec.nics[bootIndex]!.portGroup;
    // Device order is spec order; fall back to the first NIC on the boot port group.
    const nic =
      record.nics[bootIndex]?.portGroup === want
        ? record.nics[bootIndex]
        : record.nics.find((n) => n.portGroup === want);
    ethernetKey = nic?.key;
  }
  const order = bootOrder({
    cdrom: spec.bootFromCdrom,
    ethernetKey,
    diskKey: systemDisk(record)?.key,
  });
  // bootOptions is replaced as a whole: Secure Boot is set again with the boot order.
  return spec.secureBoot
    ? { efiSecureBootEnabled: "true", bootOrder: order }
    : { bootOrder: order };
}

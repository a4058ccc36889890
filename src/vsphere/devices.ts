// Virtual device lists: reading NICs, CD-ROMs and disks out of config.hardware.device, and building
// the VirtualDeviceConfigSpec entries that add or edit them. Keys are written in WSDL order.
import { MoRef, type Node } from "./xml.js";
import { clone, get, isObject, items, num, bool, str, typeOf, type NodeObject } from "./nodes.js";

const ETHERNET_TYPES = new Set([
  "VirtualE1000",
  "VirtualE1000e",
  "VirtualPCNet32",
  "VirtualVmxnet",
  "VirtualVmxnet2",
  "VirtualVmxnet3",
  "VirtualVmxnet3Vrdma",
  "VirtualSriovEthernetCard",
]);

export interface NicRecord {
  key: number;
  label: string;
  macAddress?: string;
  /** The port group (or standard network) name; the raw key when the group is unknown. */
  portGroup: string;
  connected: boolean;
  startConnected: boolean;
}

export interface CdromRecord {
  key: number;
  /** Datastore path of the attached ISO, e.g. "[LocalDS_0] vsop/x.iso". */
  isoPath?: string;
  connected: boolean;
  startConnected: boolean;
}

export interface DiskRecord {
  key: number;
  capacityKiB: number;
  fileName?: string;
  /** Controller and unit as the VM's configuration names them, e.g. "scsi0:1" (stable across reads). */
  slot?: string;
}

/** How a NIC reaches its network: a distributed port group or a standard network. */
export type NetworkBacking =
  | { kind: "distributed"; name: string; portgroupKey: string; switchUuid: string }
  | { kind: "standard"; name: string; network: MoRef };

export function deviceList(value: Node | undefined): NodeObject[] {
  return items(value).filter(isObject);
}

export function isEthernet(d: NodeObject): boolean {
  const t = typeOf(d);
  return t !== undefined ? ETHERNET_TYPES.has(t) : "macAddress" in d || "addressType" in d;
}

export function isCdrom(d: NodeObject): boolean {
  return typeOf(d) === "VirtualCdrom";
}

export function isDisk(d: NodeObject): boolean {
  return typeOf(d) === "VirtualDisk" || (typeOf(d) === undefined && "capacityInKB" in d);
}

export function deviceKey(d: NodeObject): number {
  return num(d.key) ?? 0;
}

export function findDevice(devices: NodeObject[], key: number): NodeObject | undefined {
  return devices.find((d) => deviceKey(d) === key);
}

function connectable(d: NodeObject): { connected: boolean; startConnected: boolean } {
  return {
    connected: bool(get(d, "connectable", "connected")) ?? false,
    startConnected: bool(get(d, "connectable", "startConnected")) ?? false,
  };
}

/** The NICs in device order; `portGroupName` maps a distributed port group key to its name. */
export function nicRecords(
  devices: NodeObject[],
  portGroupName: (key: string) => string | undefined,
): NicRecord[] {
  return devices.filter(isEthernet).map((d) => {
    const backing = d.backing;
    const pgKey = str(get(backing, "port", "portgroupKey"));
    const portGroup = pgKey
      ? (portGroupName(pgKey) ?? pgKey)
      : (str(get(backing, "deviceName")) ?? str(get(backing, "opaqueNetworkId")) ?? "");
    return {
      key: deviceKey(d),
      label: str(get(d, "deviceInfo", "label")) ?? "",
      macAddress: str(d.macAddress) || undefined,
      portGroup,
      ...connectable(d),
    };
  });
}

export function cdromRecords(devices: NodeObject[]): CdromRecord[] {
  return devices.filter(isCdrom).map((d) => ({
    key: deviceKey(d),
    isoPath:
      typeOf(d.backing) === "VirtualCdromIsoBackingInfo"
        ? str(get(d, "backing", "fileName"))
        : undefined,
    ...connectable(d),
  }));
}

export function diskRecords(devices: NodeObject[]): DiskRecord[] {
  return devices.filter(isDisk).map((d) => {
    const slot = slotName(devices, num(d.controllerKey), num(d.unitNumber));
    return {
      key: deviceKey(d),
      capacityKiB: num(d.capacityInKB) ?? 0,
      fileName: str(get(d, "backing", "fileName")),
      ...(slot ? { slot } : {}),
    };
  });
}

const SCSI_TYPES = new Set([
  "ParaVirtualSCSIController",
  "VirtualLsiLogicController",
  "VirtualLsiLogicSASController",
  "VirtualBusLogicController",
]);
const BUS_PREFIX: Record<string, string> = {
  VirtualAHCIController: "sata",
  VirtualNVMEController: "nvme",
  VirtualIDEController: "ide",
};

const busPrefix = (controller: NodeObject) => {
  const t = typeOf(controller) ?? "";
  return SCSI_TYPES.has(t) ? "scsi" : BUS_PREFIX[t];
};

/** "scsi0:1" for unit 1 on SCSI bus 0, as a .vmx file names the device. */
function slotName(
  devices: NodeObject[],
  controllerKey: number | undefined,
  unit: number | undefined,
): string | undefined {
  if (controllerKey === undefined || unit === undefined) return undefined;
  const ctrl = findDevice(devices, controllerKey);
  const prefix = ctrl && busPrefix(ctrl);
  const bus = ctrl && num(ctrl.busNumber);
  return prefix && bus !== undefined ? `${prefix}${bus}:${unit}` : undefined;
}

/**
 * Free slots for new disks on one SCSI controller: the one `nearDisk` (the system disk) is on when
 * that is SCSI, else the first SCSI controller. Unit 7 is the controller's own; 16 units a bus.
 */
export function freeScsiSlots(
  devices: NodeObject[],
  nearDisk?: number,
): { controllerKey: number; units: number[]; slot: (unit: number) => string } | undefined {
  const scsi = devices.filter((d) => SCSI_TYPES.has(typeOf(d) ?? ""));
  const near =
    nearDisk === undefined ? undefined : num(findDevice(devices, nearDisk)?.controllerKey);
  const ctrl = scsi.find((c) => deviceKey(c) === near) ?? scsi[0];
  if (!ctrl) return undefined;
  const key = deviceKey(ctrl);
  const used = new Set(
    devices.filter((d) => num(d.controllerKey) === key).map((d) => num(d.unitNumber)),
  );
  const units = [...Array(16).keys()].filter((u) => u !== 7 && !used.has(u));
  const bus = num(ctrl.busNumber) ?? 0;
  return { controllerKey: key, units, slot: (unit) => `scsi${bus}:${unit}` };
}

/** A copy of a VirtualDisk with a new capacity (both fields, consistent; key order kept). */
export function resizedDisk(device: NodeObject, kib: number): NodeObject {
  const out: NodeObject = {};
  for (const [k, v] of Object.entries(clone(device))) {
    if (k === "capacityInBytes") continue;
    out[k] = k === "capacityInKB" ? String(kib) : v;
    if (k === "capacityInKB") out.capacityInBytes = String(kib * 1024);
  }
  return out;
}

/**
 * The CD-ROM devices by IDE controller and unit (ide0:0, ide0:1, ide1:0, …): the order in which a
 * VM's firmware tries them when its boot order says CD-ROM.
 */
export function cdromsInBootOrder(devices: NodeObject[]): NodeObject[] {
  const bus = (d: NodeObject) => {
    const ctrl = devices.find((c) => deviceKey(c) === num(d.controllerKey));
    return num(ctrl?.busNumber) ?? num(d.controllerKey) ?? 0;
  };
  return devices
    .filter(isCdrom)
    .map((d) => ({ d, bus: bus(d), unit: num(d.unitNumber) ?? 0 }))
    .sort((a, b) => a.bus - b.bus || a.unit - b.unit)
    .map((x) => x.d);
}

/**
 * The device changes that put `isoPaths[i]` in the i-th CD-ROM drive (cdromsInBootOrder), connected
 * at power-on (and now, when `poweredOn`), adding drives in free IDE slots where the VM has too
 * few. [] when every drive already carries its ISO; undefined when no IDE slot is free.
 */
export function isoDriveChanges(
  devices: NodeObject[],
  isoPaths: readonly string[],
  poweredOn: boolean,
): NodeObject[] | undefined {
  const taken = [...devices];
  const drives = cdromsInBootOrder(devices);
  const changes: NodeObject[] = [];
  for (const [i, isoPath] of isoPaths.entries()) {
    const device = drives[i];
    const flags = { startConnected: true, connected: poweredOn, backing: isoBacking(isoPath) };
    if (device) {
      const [cd] = cdromRecords([device]);
      if (cd?.isoPath === isoPath && cd.startConnected && (!poweredOn || cd.connected)) continue;
      changes.push(deviceChange("edit", editDevice(device, flags)));
      continue;
    }
    const slot = freeIdeSlot(taken);
    if (!slot) return undefined;
    const drive = editDevice(newCdrom(-1 - i, slot.controllerKey, slot.unitNumber), flags);
    taken.push(drive); // the slot is taken for the next drive of this change
    changes.push(deviceChange("add", drive));
  }
  return changes;
}

/** A free IDE slot for a new CD-ROM (two units per IDE controller). */
export function freeIdeSlot(
  devices: NodeObject[],
): { controllerKey: number; unitNumber: number } | undefined {
  for (const ide of devices.filter((d) => typeOf(d) === "VirtualIDEController")) {
    const ctrl = deviceKey(ide);
    const used = new Set(
      devices.filter((d) => num(d.controllerKey) === ctrl).map((d) => num(d.unitNumber)),
    );
    for (const unit of [0, 1])
      if (!used.has(unit)) return { controllerKey: ctrl, unitNumber: unit };
  }
  return undefined;
}

// --- building devices ----------------------------------------------------------------------------

export function nicBacking(net: NetworkBacking): NodeObject {
  return net.kind === "distributed"
    ? {
        _type: "VirtualEthernetCardDistributedVirtualPortBackingInfo",
        port: { switchUuid: net.switchUuid, portgroupKey: net.portgroupKey },
      }
    : {
        _type: "VirtualEthernetCardNetworkBackingInfo",
        deviceName: net.name,
        network: net.network,
      };
}

/** A new vmxnet3 NIC that connects when the VM powers on. */
export function newNic(key: number, net: NetworkBacking): NodeObject {
  return {
    _type: "VirtualVmxnet3",
    key: String(key),
    backing: nicBacking(net),
    connectable: { startConnected: "true", allowGuestControl: "true", connected: "false" },
    addressType: "generated",
  };
}

export type ScsiKind = "pvscsi" | "lsilogic";

export function newScsiController(key: number, kind: ScsiKind): NodeObject {
  return {
    _type: kind === "pvscsi" ? "ParaVirtualSCSIController" : "VirtualLsiLogicController",
    key: String(key),
    busNumber: "0",
    sharedBus: "noSharing",
  };
}

/** A thin-provisioned disk whose file vSphere places in the VM's directory on `datastore`. */
export function newDisk(
  key: number,
  controllerKey: number,
  gib: number,
  datastore: string,
  unitNumber = 0,
  datastoreRef?: MoRef,
): NodeObject {
  return {
    _type: "VirtualDisk",
    key: String(key),
    backing: {
      _type: "VirtualDiskFlatVer2BackingInfo",
      fileName: `[${datastore}]`,
      ...(datastoreRef ? { datastore: datastoreRef } : {}),
      diskMode: "persistent",
      thinProvisioned: "true",
    },
    controllerKey: String(controllerKey),
    unitNumber: String(unitNumber),
    capacityInKB: String(Math.round(gib * 1024 * 1024)),
    capacityInBytes: String(Math.round(gib * 1024 * 1024) * 1024),
  };
}

/** An empty CD-ROM drive ("client device"), disconnected. */
export function newCdrom(key: number, controllerKey: number, unitNumber: number): NodeObject {
  return {
    _type: "VirtualCdrom",
    key: String(key),
    backing: emptyCdromBacking(),
    connectable: { startConnected: "false", allowGuestControl: "true", connected: "false" },
    controllerKey: String(controllerKey),
    unitNumber: String(unitNumber),
  };
}

export function emptyCdromBacking(): NodeObject {
  return {
    _type: "VirtualCdromRemotePassthroughBackingInfo",
    deviceName: "",
    useAutoDetect: "false",
    exclusive: "false",
  };
}

export function isoBacking(datastorePath: string): NodeObject {
  return { _type: "VirtualCdromIsoBackingInfo", fileName: datastorePath };
}

/** A copy of `device` with new connection flags (and optionally a new backing), key order kept. */
export function editDevice(
  device: NodeObject,
  change: { startConnected: boolean; connected: boolean; backing?: NodeObject },
): NodeObject {
  const out = clone(device);
  if (change.backing) out.backing = change.backing;
  const allow = str(get(device, "connectable", "allowGuestControl")) ?? "true";
  out.connectable = {
    startConnected: String(change.startConnected),
    allowGuestControl: allow,
    connected: String(change.connected),
  };
  return reorder(out);
}

// An entry added to a device that lacked it must still precede the subtype's fields (WSDL order).
const DEVICE_ORDER = ["_type", "key", "deviceInfo", "backing", "connectable", "slotInfo"];

function reorder(d: NodeObject): NodeObject {
  const out: NodeObject = {};
  for (const k of DEVICE_ORDER) if (k in d) out[k] = d[k];
  for (const [k, v] of Object.entries(d)) if (!(k in out)) out[k] = v;
  return out;
}

export type DeviceOperation = "add" | "edit" | "remove";

export function deviceChange(
  operation: DeviceOperation,
  device: NodeObject,
  fileOperation?: "create" | "destroy",
): NodeObject {
  return fileOperation ? { operation, fileOperation, device } : { operation, device };
}

/** bootOptions.bootOrder entries: CD-ROM, then the boot NIC, then the disk. */
export function bootOrder(opts: {
  cdrom?: boolean;
  ethernetKey?: number;
  diskKey?: number;
}): NodeObject[] {
  const out: NodeObject[] = [];
  if (opts.cdrom) out.push({ _type: "VirtualMachineBootOptionsBootableCdromDevice" });
  if (opts.ethernetKey !== undefined)
    out.push({
      _type: "VirtualMachineBootOptionsBootableEthernetDevice",
      deviceKey: String(opts.ethernetKey),
    });
  if (opts.diskKey !== undefined)
    out.push({
      _type: "VirtualMachineBootOptionsBootableDiskDevice",
      deviceKey: String(opts.diskKey),
    });
  return out;
}

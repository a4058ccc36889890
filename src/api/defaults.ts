// Effective settings: a VirtualServer's overrides over its class, over vsop's defaults.
import type { BootMethod, DiskSpec, VirtualServer, VirtualServerClassSpec } from "./types.js";

export const DEFAULT_NAMING_PATTERN =
  "^(?<apptype>[a-z][a-z0-9]*)-(?<environment>[a-z][a-z0-9]*)-(?<instance>[0-9]+)\\.(?<domain>[a-z0-9.-]+)$";

export interface EffectiveNetwork {
  portGroupTemplate: string;
  bootPortGroup: string;
  vlanOctet: number;
  vlanCIDRs: { cidr: string; vlan: number }[];
  prefixLength: number;
  services: { dns: string; ntp: string; proxy: string };
  optionalServices: Set<string>;
}

export function effectiveNetwork(cls: VirtualServerClassSpec): EffectiveNetwork {
  const n = cls.network ?? {};
  return {
    portGroupTemplate: n.portGroupTemplate ?? "VLAN-{vlan}",
    bootPortGroup: n.bootPortGroup ?? "Boot-VLAN",
    vlanOctet: n.vlanOctet ?? 3,
    vlanCIDRs: n.vlanCIDRs ?? [],
    prefixLength: n.prefixLength ?? 24,
    services: {
      dns: n.services?.dns ?? "dns-{vlan}",
      ntp: n.services?.ntp ?? "ntp-{vlan}",
      proxy: n.services?.proxy ?? "proxy-{vlan}",
    },
    optionalServices: new Set(n.services?.optional ?? []),
  };
}

export interface EffectiveHardware {
  template?: string;
  guestId: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  vmName: "ShortName" | "FQDN";
  powerCyclePolicy: "Never" | "IfNeeded";
  cloneMode: "Full" | "Linked";
  firmware?: "bios" | "efi";
  secureBoot: boolean;
  updatePolicy: "OnCreate" | "Rolling";
  maxUnavailable: number;
  /** Data disks, each with its datastore (default: the VM's). */
  disks: Required<DiskSpec>[];
  removeDisks: boolean;
}

/**
 * The class's hardware.disks with the server's spec.disks over them by name (a server grows a
 * class disk or adds its own; it cannot drop one the class gives every server), in that order.
 */
export function effectiveDisks(
  vs: VirtualServer,
  cls: VirtualServerClassSpec,
): Required<DiskSpec>[] {
  const byName = new Map<string, Required<DiskSpec>>();
  for (const d of [...(cls.hardware?.disks ?? []), ...(vs.spec.disks ?? [])])
    byName.set(d.name, {
      name: d.name,
      sizeGiB: d.sizeGiB,
      datastore:
        d.datastore ??
        byName.get(d.name)?.datastore ??
        cls.placement.datastore ??
        vs.status?.vm?.datastore ??
        "",
    });
  return [...byName.values()];
}

export function effectiveHardware(
  vs: VirtualServer,
  cls: VirtualServerClassSpec,
): EffectiveHardware {
  const h = cls.hardware ?? {};
  return {
    template: h.template,
    guestId: h.guestId ?? "otherLinux64Guest",
    cpus: vs.spec.cpus ?? h.cpus ?? 2,
    memoryMiB: vs.spec.memoryMiB ?? h.memoryMiB ?? 2048,
    diskGiB: vs.spec.diskGiB ?? h.diskGiB ?? 20,
    vmName: h.vmName ?? "ShortName",
    powerCyclePolicy: h.powerCyclePolicy ?? "Never",
    cloneMode: h.cloneMode ?? "Full",
    firmware: h.firmware,
    secureBoot: h.secureBoot ?? false,
    updatePolicy: h.updatePolicy ?? "OnCreate",
    maxUnavailable: h.maxUnavailable ?? 1,
    disks: effectiveDisks(vs, cls),
    removeDisks: h.removeDisks ?? false,
  };
}

/**
 * The size an existing VM should have. The server's own cpus/memoryMiB always apply; the class's
 * only under updatePolicy Rolling, so that editing a class never resizes (or power-cycles) the
 * servers built from it unless the class says so. Otherwise the VM keeps the size it was built with.
 */
export function targetSize(
  vs: VirtualServer,
  cls: VirtualServerClassSpec,
  vm: { cpus: number; memoryMiB: number },
  classApplies = true,
): { cpus: number; memoryMiB: number } {
  const hw = effectiveHardware(vs, cls);
  if (classApplies && hw.updatePolicy === "Rolling")
    return { cpus: hw.cpus, memoryMiB: hw.memoryMiB };
  return { cpus: vs.spec.cpus ?? vm.cpus, memoryMiB: vs.spec.memoryMiB ?? vm.memoryMiB };
}

export function bootMethod(cls: VirtualServerClassSpec): BootMethod {
  return cls.boot?.method ?? "network";
}

export function puppetEnvironment(vs: VirtualServer, cls: VirtualServerClassSpec): string {
  return vs.spec.puppet?.environment ?? cls.puppet?.environment ?? "production";
}

export function vmName(vs: VirtualServer, cls: VirtualServerClassSpec): string {
  return effectiveHardware(vs, cls).vmName === "FQDN"
    ? vs.spec.hostname
    : vs.spec.hostname.split(".")[0]!;
}

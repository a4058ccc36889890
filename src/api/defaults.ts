// Effective settings: a VirtualServer's overrides over its class, over vsop's defaults.
import type { BootMethod, VirtualServer, VirtualServerClassSpec } from "./types.js";

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
  };
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

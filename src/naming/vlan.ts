// Address → VLAN: an explicit CIDR map first, else one octet of the address (10.12.30.20 → 30).
import { StepError } from "../errors.js";

export function ipv4ToInt(address: string): number | undefined {
  const parts = address.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    n = n * 256 + Number(p);
  }
  return n;
}

/** Whether `cidr` is an IPv4 network such as 10.20.0.0/16 (prefix 0-32). */
export function isIPv4CIDR(cidr: string): boolean {
  const [base, bits, ...rest] = cidr.split("/");
  return (
    rest.length === 0 &&
    ipv4ToInt(base ?? "") !== undefined &&
    /^\d{1,2}$/.test(bits ?? "") &&
    Number(bits) <= 32
  );
}

export function inCIDR(address: string, cidr: string): boolean {
  const [base, bits] = cidr.split("/");
  const a = ipv4ToInt(address);
  const b = ipv4ToInt(base ?? "");
  const len = Number(bits);
  if (a === undefined || b === undefined || !Number.isInteger(len) || len < 0 || len > 32)
    return false;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return (a & mask) >>> 0 === (b & mask) >>> 0;
}

export interface VLANRule {
  vlanOctet: number;
  vlanCIDRs: { cidr: string; vlan: number }[];
}

export function deriveVLAN(address: string, rule: VLANRule): number {
  for (const { cidr, vlan } of rule.vlanCIDRs) if (inCIDR(address, cidr)) return vlan;
  const octet = Number(address.split(".")[rule.vlanOctet - 1]);
  if (!Number.isInteger(octet) || octet < 1 || octet > 4094) {
    throw new StepError(
      "VLANNotDerivable",
      `Address ${address} gives no VLAN: octet ${rule.vlanOctet} is ${octet}, and VLANs are 1-4094` +
        (rule.vlanCIDRs.length ? ", and no vlanCIDRs entry of the class matches it" : "") +
        "; fix the DNS record or the class's network.vlanOctet/vlanCIDRs.",
      { condition: "NameResolved" },
    );
  }
  return octet;
}

/** Fills {vlan} in a template such as VLAN-{vlan} or proxy-{vlan}. */
export function fillVLAN(template: string, vlan: number): string {
  return template.replaceAll("{vlan}", String(vlan));
}

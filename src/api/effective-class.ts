// A VirtualServerClass parsed once into typed settings with vsop's defaults: durations in
// seconds, the boot method, the network rules. Steps read these, never the raw strings, so a bad
// value is InvalidClass before anything happens, and every default lives here or in defaults.ts.
import { bootMethod, effectiveNetwork, type EffectiveNetwork } from "./defaults.js";
import { durationSeconds } from "./duration.js";
import { isIPv4CIDR } from "../naming/vlan.js";
import type { BootMethod, VirtualServerClass } from "./types.js";
import { checkExtraFact } from "../puppet/trusted-facts.js";

export interface EffectiveClass {
  bootMethod: BootMethod;
  network: EffectiveNetwork;
  /** boot.installTimeout (default 1h), as written and in seconds. */
  installTimeout: { text: string; seconds: number };
  /** hardware.shutdownTimeout (default 5m): how long a soft power-off waits for the guest. */
  shutdownTimeout: { text: string; seconds: number };
  /** placement.antiAffinity (default None); ByAppTypeAndEnvironment needs placement.cluster. */
  antiAffinity: "ByAppTypeAndEnvironment" | "None";
  puppet: {
    /** puppet.interval in seconds; undefined: runs only when spec.puppet changes. */
    intervalSeconds?: number;
    /** puppet.runTimeout (default 30m), as written and in seconds. */
    runTimeout: { text: string; seconds: number };
    /** puppet.extensionRequests, checked: trusted facts the class adds to every server's CSR. */
    extensionRequests: Record<string, string>;
    /** puppet.maxConcurrentRuns (default 10): runs of the class in flight at once. */
    maxConcurrentRuns: number;
    /** puppet.splay in seconds (default 0): periodic runs spread over it. */
    splaySeconds: number;
  };
}

/** A class field vsop cannot use; the reconciler reports it as InvalidClass. */
export class InvalidClassField extends Error {
  override name = "InvalidClassField";
  constructor(
    readonly field: string,
    readonly value: string,
    why: string,
  ) {
    super(`spec.${field} "${value}" ${why}`);
  }
}

function duration(field: string, value: string, lenient: boolean, fallback: string) {
  const seconds = durationSeconds(value);
  if (seconds !== undefined && seconds > 0) return { text: value, seconds };
  if (lenient) return { text: fallback, seconds: durationSeconds(fallback)! };
  throw new InvalidClassField(field, value, "is not a duration such as 90s, 30m or 2h");
}

function extensionRequests(
  facts: Record<string, string>,
  lenient: boolean,
): Record<string, string> {
  for (const [name, value] of Object.entries(facts)) {
    const why = checkExtraFact(name, String(value));
    if (!why) continue;
    if (lenient) return {};
    throw new InvalidClassField(`puppet.extensionRequests.${name}`, String(value), why);
  }
  return facts;
}

const parsed = new WeakMap<VirtualServerClass, EffectiveClass>();

/**
 * The class's effective settings (memoized per object: informers hand out immutable snapshots).
 * Throws InvalidClassField; `lenient` uses defaults instead (for deleting, which must not block).
 */
export function effectiveClass(cls: VirtualServerClass, lenient = false): EffectiveClass {
  const known = parsed.get(cls);
  if (known) return known;
  const s = cls.spec;
  const interval = s.puppet?.interval;
  // Partial classes (unit-test fakes) may lack placement.
  let antiAffinity = (s.placement as typeof s.placement | undefined)?.antiAffinity ?? "None";
  if (antiAffinity === "ByAppTypeAndEnvironment" && !s.placement?.cluster) {
    if (!lenient)
      throw new InvalidClassField(
        "placement.antiAffinity",
        antiAffinity,
        "needs placement.cluster (DRS rules belong to a cluster)",
      );
    antiAffinity = "None";
  }
  const hw = s.hardware;
  if (!lenient && hw?.cloneMode === "Linked" && !hw.template)
    throw new InvalidClassField("hardware.cloneMode", "Linked", "needs hardware.template");
  if (!lenient && hw?.secureBoot && hw.firmware !== "efi")
    throw new InvalidClassField("hardware.secureBoot", "true", "needs hardware.firmware efi");
  const settings: EffectiveClass = {
    antiAffinity,
    bootMethod: bootMethod(s),
    network: effectiveNetwork(s),
    installTimeout: duration("boot.installTimeout", s.boot?.installTimeout ?? "1h", lenient, "1h"),
    shutdownTimeout: duration(
      "hardware.shutdownTimeout",
      s.hardware?.shutdownTimeout ?? "5m",
      lenient,
      "5m",
    ),
    puppet: {
      intervalSeconds: interval
        ? duration("puppet.interval", interval, lenient, "24h").seconds
        : undefined,
      runTimeout: duration("puppet.runTimeout", s.puppet?.runTimeout ?? "30m", lenient, "30m"),
      extensionRequests: extensionRequests(s.puppet?.extensionRequests ?? {}, lenient),
      maxConcurrentRuns: s.puppet?.maxConcurrentRuns ?? 10,
      // "0" is no splay; the duration helper refuses it, so it is not asked.
      splaySeconds:
        s.puppet?.splay && durationSeconds(s.puppet.splay) !== 0
          ? duration("puppet.splay", s.puppet.splay, lenient, "0s").seconds
          : 0,
    },
  };
  if (!lenient) {
    // A CIDR that cannot match would silently hand its addresses to vlanOctet: another VLAN.
    settings.network.vlanCIDRs.forEach(({ cidr }, i) => {
      if (!isIPv4CIDR(cidr))
        throw new InvalidClassField(
          `network.vlanCIDRs[${i}].cidr`,
          cidr,
          "is not an IPv4 network such as 10.20.0.0/16",
        );
    });
    parsed.set(cls, settings);
  }
  return settings;
}

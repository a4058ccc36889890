// Rolls the power cycles of a class's servers: at most hardware.maxUnavailable of them are off for
// a resize at once, so editing a class (updatePolicy Rolling) never takes a whole fleet down.
import type { VirtualServer } from "../../api/types.js";
import { keyOf } from "../../controller/informer.js";

/** How long a slot granted in this process counts before its status write shows in the cache. */
const GRANT_MS = 30_000;

export type SlotAnswer = { granted: true } | { granted: false; holders: string[] };

export class PowerCycleSlots {
  /** Slots granted here whose `status.vm.powerCycle` the cache may not show yet. */
  private readonly granted = new Map<string, { cls: string; at: number }>();

  constructor(
    /** The servers of a class. */
    private readonly ofClass: (cls: string) => VirtualServer[],
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Whether `key` may power its VM off now. Holders are the class's servers whose status records a
   * power cycle (so a restarted operator counts them too) plus recent grants of this process.
   */
  acquire(cls: string, key: string, limit: number): SlotAnswer {
    const holders = new Set<string>();
    for (const vs of this.ofClass(cls))
      if (vs.status?.vm?.powerCycle && !vs.metadata.deletionTimestamp) holders.add(keyOf(vs));
    const now = this.now();
    for (const [k, g] of this.granted) {
      if (now - g.at > GRANT_MS) this.granted.delete(k);
      else if (g.cls === cls) holders.add(k);
    }
    if (holders.has(key)) return { granted: true };
    if (holders.size >= limit) return { granted: false, holders: [...holders].sort() };
    this.granted.set(key, { cls, at: now });
    return { granted: true };
  }

  /** The server's power cycle is over (its status no longer records one). */
  release(key: string): void {
    this.granted.delete(key);
  }
}

/** No limit: for callers (tests, tools) that run one server at a time. */
export const unlimitedSlots = () => new PowerCycleSlots(() => []);

// The decisions around one Puppet run that need no node and no cluster: whether a run asked for
// by a process that died was carried out (from the node's own status), where a server's periodic
// run falls within the class's splay, and how many runs of a class are in flight at once.
import type { VirtualServerStatus } from "../../api/types.js";

type PuppetStatus = NonNullable<VirtualServerStatus["puppet"]>;

/** What puppet#status says of a node, as far as recovering an intent needs it. */
export interface NodeRunState {
  applying: boolean;
  /** Epoch seconds (node clock) of the last finished run; 0 when none. */
  lastrun: number;
  /** Seconds since then by the node's clock; null when it has not run. */
  sinceLastrun: number | null;
}

export type Recovery = { ran: false } | { ran: true; requestedAt: number; applying: boolean };

/**
 * Whether the run of an intent written at `intentAtMs` (vsop's clock) reached the node, from the
 * node's status received at `receivedAtMs`: a run is applying now, or one finished after the
 * intent and after the last run vsop recorded (`lastRunAt`). The node's clock is read from the
 * reply (lastrun + since_lastrun is the node's "now"), so a node clock ahead or behind does not
 * count a run twice or miss it. requestedAt: the intent's time by the node's clock, no later than
 * the run it found, which status then records as the request.
 */
export function recoverRun(
  intentAtMs: number,
  node: NodeRunState,
  receivedAtMs: number,
  lastRunAt?: string,
): Recovery {
  const nodeNow =
    node.lastrun > 0 && node.sinceLastrun !== null ? node.lastrun + node.sinceLastrun : undefined;
  const offset = nodeNow === undefined ? 0 : nodeNow - receivedAtMs / 1000;
  const intentOnNode = Math.floor(intentAtMs / 1000 + offset);
  if (node.applying) return { ran: true, requestedAt: intentOnNode, applying: true };
  const prior = lastRunAt ? Math.floor(Date.parse(lastRunAt) / 1000) : 0;
  if (node.lastrun > 0 && node.lastrun > prior && node.lastrun >= intentOnNode)
    return { ran: true, requestedAt: Math.min(intentOnNode, node.lastrun), applying: false };
  return { ran: false };
}

/** Whether status shows a run asked for or requested and not finished. */
export function runInFlight(p: PuppetStatus | undefined): boolean {
  if (!p) return false;
  if (p.pendingRun) return true;
  if (!p.requestedAt) return false;
  if (p.finishedFor !== undefined) return p.finishedFor !== p.requestedAt;
  return !p.lastRunAt || Date.parse(p.lastRunAt) < Date.parse(p.requestedAt);
}

/**
 * A server's place in the class's splay: seconds in [0, splaySeconds), the same for the server
 * every time (a hash of its UID), so a fleet's periodic runs spread over the splay and stay spread
 * across restarts.
 */
export function splayOffsetSeconds(uid: string, splaySeconds: number): number {
  if (!(splaySeconds > 0)) return 0;
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < uid.length; i++) h = Math.imul(h ^ uid.charCodeAt(i), 0x01000193) >>> 0;
  return (h / 2 ** 32) * splaySeconds;
}

export interface RunSlotsOptions {
  /** Puts a key that waited for a slot back on the work queue when one is free. */
  wake: (key: string) => void;
  /**
   * Keys whose status shows a run in flight in the group, asked once per group before its first
   * slot is given: after a restart those runs count before any new one starts.
   */
  inFlight?: (group: string) => Iterable<string>;
  now?: () => number;
}

/**
 * Puppet runs in flight per class, across every worker of this operator: a run takes a slot when
 * it is asked for and gives it back when it finished (or failed to start); at most the class's
 * maxConcurrentRuns are held at once. A slot expires (runTimeout), so one lost release cannot
 * shrink the fleet's pace for good.
 */
export class RunSlots {
  /** Holders by group: key → expiry (ms). */
  private readonly groups = new Map<string, Map<string, number>>();
  /** Keys that found no free slot, by group, oldest first. */
  private readonly waiting = new Map<string, Set<string>>();
  private readonly now: () => number;

  constructor(private readonly options: RunSlotsOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Takes a slot for `key` unless `limit` runs of the group are in flight; true when the key holds
   * one (a key that already holds one keeps it and has its expiry renewed). A key refused is
   * woken when a slot of the group is given back.
   */
  acquire(group: string, key: string, limit: number, ttlMs: number): boolean {
    const holders = this.holders(group, ttlMs);
    if (holders.has(key) || holders.size < limit) {
      holders.set(key, this.now() + ttlMs);
      this.waiting.get(group)?.delete(key);
      return true;
    }
    let queue = this.waiting.get(group);
    if (!queue) this.waiting.set(group, (queue = new Set()));
    queue.add(key);
    return false;
  }

  /** Counts a run found in flight (status), beyond the limit if need be: it runs already. */
  hold(group: string, key: string, ttlMs: number): void {
    this.release(key, group);
    this.holders(group, ttlMs).set(key, this.now() + ttlMs);
  }

  /** Gives the key's slot back (in every group but `keep`), waking the oldest waiter. */
  release(key: string, keep?: string): void {
    for (const [group, holders] of this.groups)
      if (group !== keep && holders.delete(key)) this.wakeOne(group);
    if (keep === undefined) for (const queue of this.waiting.values()) queue.delete(key);
  }

  /** Whether `key` holds one of the group's slots now. */
  holds(group: string, key: string): boolean {
    return (this.groups.get(group)?.get(key) ?? 0) > this.now();
  }

  /** Runs of the group in flight now. */
  held(group: string): number {
    const now = this.now();
    return [...(this.groups.get(group)?.values() ?? [])].filter((e) => e > now).length;
  }

  private holders(group: string, ttlMs: number): Map<string, number> {
    let holders = this.groups.get(group);
    const now = this.now();
    if (!holders) {
      this.groups.set(group, (holders = new Map()));
      for (const key of this.options.inFlight?.(group) ?? []) holders.set(key, now + ttlMs);
    }
    for (const [key, expiry] of holders)
      if (expiry <= now) {
        holders.delete(key);
        this.wakeOne(group);
      }
    return holders;
  }

  private wakeOne(group: string): void {
    const queue = this.waiting.get(group);
    const next = queue?.values().next();
    if (!queue || !next || next.done) return;
    queue.delete(next.value);
    this.options.wake(next.value);
  }
}

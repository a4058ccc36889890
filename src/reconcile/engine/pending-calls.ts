// Remote calls a reconcile started and did not wait for. The call runs in the background; when it
// settles, its outcome (value or error) is kept and the object's key goes back on the work queue,
// where a later reconcile takes it. A slow or silent peer then holds no worker: only its own call.
// The table is bounded: a cap on entries, outcomes nobody took (and calls that never settle)
// expire, and a deleted object's calls are forgotten.
import { outsideReconcile } from "../../abort.js";

/** A failed call carries `failures`: consecutive failures of this id for this key, itself included. */
export type CallState<T> =
  | { state: "none" }
  | { state: "pending"; startedAt: number }
  | { state: "settled"; ok: true; value: T }
  | { state: "settled"; ok: false; error: unknown; failures: number };

export interface PendingCallsOptions {
  /** Puts the key back on the work queue when one of its calls settled. */
  wake: (key: string) => void;
  /** At most this many calls in flight or settled and not taken (default 10,000). */
  maxEntries?: number;
  /** An outcome not taken this long after it settled, or a call still running this long after it
   * started, is dropped (default 5 minutes). */
  ttlMs?: number;
  now?: () => number;
  /** Retry pace of failed calls (`--backoff-base`, `--backoff-max`); default 1 s doubling to 5 min. */
  backoff?: { baseMs: number; maxMs: number };
}

interface Entry {
  startedAt: number;
  settledAt?: number;
  outcome?: { ok: true; value: unknown } | { ok: false; error: unknown };
}

export class PendingCalls {
  /** Entries by object key, then call id. */
  private readonly keys = new Map<string, Map<string, Entry>>();
  /** Consecutive failures by "key\0id", oldest first; a success or forget() clears them. */
  private readonly failures = new Map<string, number>();
  private count = 0;
  private lastSweep = 0;
  private stopped = false;
  private readonly maxEntries: number;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(private readonly options: PendingCallsOptions) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.ttlMs = options.ttlMs ?? 300_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * Seconds before retrying a call that failed `failures` times in a row, for failures without a
   * pace of their own: the base doubling up to the max, as the work queue's backoff (which the
   * reconcile that starts a call resets, since it returns a wait, not an error).
   */
  retryAfterSeconds(failures: number): number {
    const { baseMs, maxMs } = this.options.backoff ?? { baseMs: 1000, maxMs: 300_000 };
    return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1)) / 1000;
  }

  /** Calls in flight plus outcomes not taken yet. */
  get size(): number {
    return this.count;
  }

  /**
   * Runs `call` in the background, outside the reconcile's scope (its AbortSignal): the call
   * outlives the reconcile. A call already there for (key, id), running or settled, is left as it
   * is. Returns false, starting nothing, when the table is full or stopped.
   */
  start<T>(key: string, id: string, call: () => Promise<T>): boolean {
    if (this.stopped) return false;
    if (this.current(key, id)) return true;
    if (this.count >= this.maxEntries || this.now() - this.lastSweep > this.ttlMs / 10)
      this.sweep();
    if (this.count >= this.maxEntries) return false;
    const entry: Entry = { startedAt: this.now() };
    let calls = this.keys.get(key);
    if (!calls) this.keys.set(key, (calls = new Map()));
    calls.set(id, entry);
    this.count++;
    let running: Promise<T>;
    try {
      running = outsideReconcile(call);
    } catch (err) {
      running = Promise.reject(err);
    }
    running.then(
      (value) => this.settle(key, id, entry, { ok: true, value }),
      (error: unknown) => this.settle(key, id, entry, { ok: false, error }),
    );
    return true;
  }

  /** The call's state; a settled outcome is handed over once and removed. */
  take<T>(key: string, id: string): CallState<T> {
    const entry = this.current(key, id);
    if (!entry) return { state: "none" };
    if (!entry.outcome) return { state: "pending", startedAt: entry.startedAt };
    this.remove(key, id);
    if (entry.outcome.ok) return { state: "settled", ok: true, value: entry.outcome.value as T };
    const failures = this.failures.get(`${key}\0${id}`) ?? 1;
    return { state: "settled", ok: false, error: entry.outcome.error, failures };
  }

  /** Drops the key's calls (the object is gone); their outcomes are ignored when they settle. */
  forget(key: string): void {
    const calls = this.keys.get(key);
    if (calls) {
      this.count -= calls.size;
      this.keys.delete(key);
    }
    for (const streak of this.failures.keys())
      if (streak.startsWith(`${key}\0`)) this.failures.delete(streak);
  }

  /** Forgets everything; calls that settle later wake nobody. */
  stop(): void {
    this.stopped = true;
    this.keys.clear();
    this.failures.clear();
    this.count = 0;
  }

  /** The entry, unless it expired (then it is removed). */
  private current(key: string, id: string): Entry | undefined {
    const entry = this.keys.get(key)?.get(id);
    if (entry && this.expired(entry, this.now())) {
      this.remove(key, id);
      return undefined;
    }
    return entry;
  }

  private expired(entry: Entry, now: number): boolean {
    return now - (entry.settledAt ?? entry.startedAt) > this.ttlMs;
  }

  private settle(key: string, id: string, entry: Entry, outcome: Entry["outcome"] & {}): void {
    if (this.keys.get(key)?.get(id) !== entry) return; // forgotten, expired or stopped meanwhile
    entry.outcome = outcome;
    entry.settledAt = this.now();
    const streak = `${key}\0${id}`;
    const failures = this.failures.get(streak) ?? 0;
    this.failures.delete(streak);
    // Re-inserted, so the map stays oldest first and the cap drops the stalest streak.
    if (!outcome.ok) {
      this.failures.set(streak, failures + 1);
      if (this.failures.size > this.maxEntries)
        this.failures.delete(this.failures.keys().next().value!);
    }
    this.options.wake(key);
  }

  private remove(key: string, id: string): void {
    const calls = this.keys.get(key);
    if (!calls?.delete(id)) return;
    this.count--;
    if (calls.size === 0) this.keys.delete(key);
  }

  private sweep(): void {
    const now = (this.lastSweep = this.now());
    for (const [key, calls] of this.keys)
      for (const [id, entry] of calls) if (this.expired(entry, now)) this.remove(key, id);
  }
}

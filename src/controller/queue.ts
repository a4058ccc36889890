// A work queue of object keys with client-go's guarantees: a key is queued at most once, never
// handed to two workers at once (a key added while in flight is re-queued when it is done), delayed
// adds, and per-key exponential backoff that `forget` resets. It reports to an optional observer
// the events client-go's workqueue metrics count, and exposes depth and in-flight ages for gauges
// read on scrape.

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

/** What the queue reports, as client-go's workqueue metrics provider sees it. */
export interface QueueObserver {
  /** A key became dirty (client-go's add: not counted when it was already waiting). */
  added(): void;
  /** A worker took a key that had waited this long since it was added. */
  started(waitedSeconds: number): void;
  /** A worker finished a key it had held this long. */
  finished(workedSeconds: number): void;
  /** A delayed add (client-go counts every AddAfter, rate-limited or not, as a retry). */
  retried(): void;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  /** When each dirty key was added and each in-flight key was taken (monotonic seconds). */
  private readonly addedAt = new Map<string, number>();
  private readonly startedAt = new Map<string, number>();

  constructor(
    private readonly backoff: BackoffOptions = { baseMs: 1000, maxMs: 300_000 },
    private readonly observer?: QueueObserver,
  ) {}

  get length(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.processing.size;
  }

  /** Keys added and not yet taken by a worker, including those waiting for their own run to end. */
  get depth(): number {
    return this.dirty.size;
  }

  /** How long each in-flight key has been held by its worker, in seconds. */
  inFlightSeconds(): number[] {
    const t = now();
    return [...this.startedAt.values()].map((s) => t - s);
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    this.observer?.added();
    this.addedAt.set(key, now());
    if (this.processing.has(key)) return; // re-queued by done()
    this.enqueue(key);
  }

  /** Hands the key to a waiting worker, or queues it. */
  private enqueue(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      this.take(key);
      waiter(key);
    } else {
      this.queue.push(key);
    }
  }

  /** Hands the key to a worker. */
  private take(key: string): void {
    this.dirty.delete(key);
    this.processing.add(key);
    const t = now();
    this.observer?.started(t - (this.addedAt.get(key) ?? t));
    this.addedAt.delete(key);
    this.startedAt.set(key, t);
  }

  /** Adds the key after `ms`; an earlier pending add for the key wins. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    this.observer?.retried();
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const pending = this.timers.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Adds the key after its next backoff delay; returns that delay. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Resets the key's backoff after a success. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Waits for the next key; undefined once the queue shuts down. */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.take(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    const started = this.startedAt.get(key);
    this.startedAt.delete(key);
    if (started !== undefined) this.observer?.finished(now() - started);
    if (this.dirty.has(key)) {
      // Added while in flight (and counted then): it can be handed out now.
      if (this.shuttingDown) this.dirty.delete(key);
      else this.enqueue(key);
    }
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}

// The update loop that keeps the VM cache current: one filter that walks the inventory to all
// VMs and distributed port groups, in a PropertyCollector of our own, long-polled with
// WaitForUpdatesEx. Tasks are not in it (see inventoryObjectSpec): a task's end is read by
// VCenter.taskState, and the VM change it makes wakes the owner through this loop. A VM that
// vsop read itself while a batch was out is read again rather than taken back by that batch.
// A stalled poll gets a new collector; any other failure rebuilds collector, filter and cache,
// with backoff.
import type { Logger } from "pino";
import type { VSphereSession } from "./session.js";
import { MoRef } from "./xml.js";
import { runWithSignal } from "../abort.js";
import { VSphereFault, VSphereUnreachable } from "./errors.js";
import { inventoryObjectSpec, propertySpec, retrieve, type ObjectContent } from "./properties.js";
import { parseUpdateSet, PORTGROUP_PROPERTIES, type ObjectUpdate, type VMCache } from "./cache.js";
import { VM_PROPERTIES, VM_TYPE } from "./vms.js";

/** What one applied batch changed: VMs, by moRef, with their owner before and after. */
export interface Changes {
  vms: { moRef: string; owners: (string | undefined)[] }[];
}

export interface WatchOptions {
  /** Longest server-side wait of one WaitForUpdatesEx; below the SOAP request timeout. */
  maxWaitSeconds: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** How long past its maxWaitSeconds a long poll may take to answer (at most maxWait again). */
const POLL_GRACE_SECONDS = 10;

/** A long poll that timed out on the client while the loop was following changes. */
class PollStalled extends Error {
  constructor(override readonly cause: VSphereUnreachable) {
    super("WaitForUpdatesEx did not answer in time");
  }
}

const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));

/** Faults after which the session or the server-side objects are gone (vCenter restarted). */
const SESSION_LOST = new Set(["ManagedObjectNotFound", "NotAuthenticated"]);

export class UpdateLoop {
  private loop: Promise<void> | undefined;
  private stopping = false;
  private collector: MoRef | undefined;
  private polling = false;
  private isSynced = false;
  private error: Error | undefined;
  private starters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private syncWaiters: (() => void)[] = [];
  private wake: (() => void) | undefined;
  /** Counts applied update batches and resyncs, for tests and metrics. */
  batches = 0;
  resyncs = 0;

  constructor(
    private readonly session: VSphereSession,
    private readonly cache: VMCache,
    private readonly log: Logger,
    private readonly opts: WatchOptions,
    /** Called after the session was reset, so pooled server-side objects are forgotten. */
    private readonly onSessionReset: () => void = () => undefined,
    /** Called after each applied batch (and full sync) with what it changed. */
    private readonly onChanges: (changes: Changes) => void = () => undefined,
  ) {}

  get synced(): boolean {
    return this.isSynced;
  }

  get lastError(): Error | undefined {
    return this.error;
  }

  /** Starts the loop; resolves at the first full sync, rejects with the first failure. */
  start(): Promise<void> {
    if (!this.loop) {
      this.stopping = false;
      this.loop = this.run();
    }
    if (this.isSynced) return Promise.resolve();
    return new Promise((resolve, reject) => this.starters.push({ resolve, reject }));
  }

  /** Resolves when the cache is synced, or false after `timeoutMs`. */
  async whenSynced(timeoutMs: number): Promise<boolean> {
    if (this.isSynced) return true;
    let timer: NodeJS.Timeout | undefined;
    const synced = await Promise.race([
      new Promise<boolean>((resolve) => this.syncWaiters.push(() => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return synced;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    const loop = this.loop;
    // CancelWaitForUpdates ends the long poll; repeat in case it raced the poll's start.
    while (loop && this.polling && this.collector) {
      await this.session.invoke("CancelWaitForUpdates", this.collector).catch(() => undefined);
      const done = await Promise.race([
        loop.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
      ]);
      if (done) break;
    }
    await loop;
    this.loop = undefined;
    this.isSynced = false;
    this.settleStarters(new Error("the vSphere update loop was stopped"));
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        await this.follow(() => (failures = 0));
      } catch (err) {
        if (this.stopping) break;
        if (err instanceof PollStalled && failures === 0) {
          // The cache stays in use (behind by the stall at most) while a new collector takes a
          // fresh snapshot; only a second failure in a row counts as vCenter being away.
          failures++;
          this.log.warn({ err: err.cause }, "vSphere update poll stalled; new collector");
          const pc = this.collector;
          this.collector = undefined;
          if (pc) void this.session.invoke("DestroyPropertyCollector", pc).catch(() => undefined);
          continue;
        }
        const error = err instanceof PollStalled ? err.cause : asError(err);
        this.isSynced = false;
        this.error = error;
        this.settleStarters(error);
        failures++;
        const lost =
          error instanceof VSphereUnreachable ||
          (error instanceof VSphereFault && SESSION_LOST.has(error.fault));
        const pc = this.collector;
        this.collector = undefined;
        if (lost) {
          this.session.reset();
          this.onSessionReset();
        } else {
          // Best effort: the session lives on, so its leftovers would pile up.
          if (pc) await this.session.invoke("DestroyPropertyCollector", pc).catch(() => undefined);
        }
        const delay = this.backoff(failures);
        this.log.warn({ err: error, retryInMs: delay }, "vSphere update loop failed");
        await this.sleep(delay);
      }
    }
  }

  /** One collector's life: create it, take the full snapshot, then follow changes. */
  private async follow(onSynced: () => void): Promise<void> {
    const sc = await this.session.serviceContent();
    const pc = (await this.session.invoke(
      "CreatePropertyCollector",
      sc.propertyCollector,
    )) as MoRef;
    this.collector = pc;
    await this.session.invoke("CreateFilter", pc, {
      spec: {
        propSet: [
          propertySpec("VirtualMachine", VM_PROPERTIES),
          propertySpec("DistributedVirtualPortgroup", PORTGROUP_PROPERTIES),
        ],
        objectSet: [inventoryObjectSpec(sc.rootFolder)],
      },
      partialUpdates: false,
    });

    // Our own reads that end after this mark may be older or newer than the snapshot: those
    // VMs are read again once it is in.
    const snapshotMark = this.cache.readMark;
    const snapshot: ObjectUpdate[] = [];
    let version = "";
    for (;;) {
      const set = parseUpdateSet(await this.poll(pc, version));
      if (!set) continue;
      snapshot.push(...set.updates);
      version = set.version;
      if (!set.truncated) break;
    }
    let mark = this.cache.readMark;
    const readMeanwhile = this.cache.readAfter(snapshotMark);
    const owners = this.ownersOf(snapshot);
    for (const ref of readMeanwhile)
      if (!owners.has(ref)) owners.set(ref, this.cache.get(ref)?.owner);
    this.cache.finishResync(snapshot);
    if (readMeanwhile.length) await this.readVMs(readMeanwhile);
    this.resyncs++;
    this.isSynced = true;
    this.error = undefined;
    onSynced();
    this.log.info({ vms: this.cache.size }, "vSphere VM cache synced");
    this.settleStarters();
    for (const w of this.syncWaiters.splice(0)) w();
    this.onChanges({ vms: this.withOwners(owners) });

    while (!this.stopping) {
      const set = parseUpdateSet(await this.poll(pc, version, true));
      // A VM we read ourselves since the last batch came (while this poll was out, or while
      // that batch was applied): its updates here may be older than that read (vcsim queues
      // each change with its value then), so it is read again instead, one call for all such
      // VMs of the batch; one that our read found gone stays gone.
      const since = mark;
      mark = this.cache.readMark;
      if (!set || this.stopping) continue;
      const before = this.ownersOf(set.updates);
      const ours = this.cache.readSince(since, set.updates);
      this.cache.apply(set.updates, ours);
      const reread = [...ours].filter((ref) => this.cache.vmProps(ref));
      if (reread.length) await this.readVMs(reread);
      this.batches++;
      version = set.version;
      this.onChanges({ vms: this.withOwners(before) });
    }
  }

  /** Reads these VMs into the cache; one that is gone leaves it. */
  private async readVMs(refs: string[]): Promise<void> {
    let contents: ObjectContent[];
    try {
      contents = await retrieve(this.session, {
        propSet: [propertySpec(VM_TYPE, VM_PROPERTIES)],
        objectSet: refs.map((ref) => ({ obj: new MoRef(VM_TYPE, ref), skip: false })),
      });
    } catch (err) {
      if (!(err instanceof VSphereFault && err.fault === "ManagedObjectNotFound")) throw err;
      // One of them is gone, and vCenter faults the whole read for it: each alone then.
      if (refs.length === 1) this.cache.removeVM(refs[0]!);
      else for (const ref of refs) await this.readVMs([ref]);
      return;
    }
    const found = new Set<string>();
    for (const c of contents) {
      if (!Object.keys(c.props).length) continue;
      found.add(c.obj.value);
      this.cache.upsertVM(c.obj.value, c.props);
    }
    for (const ref of refs) if (!found.has(ref)) this.cache.removeVM(ref);
  }

  /** The owners of the VMs an update touches, as the cache knows them before it is applied. */
  private ownersOf(updates: ObjectUpdate[]): Map<string, string | undefined> {
    const out = new Map<string, string | undefined>();
    for (const u of updates)
      if (u.obj.type === "VirtualMachine" && !out.has(u.obj.value))
        out.set(u.obj.value, this.cache.get(u.obj.value)?.owner);
    return out;
  }

  private withOwners(before: Map<string, string | undefined>): Changes["vms"] {
    return [...before].map(([moRef, owner]) => ({
      moRef,
      owners: [owner, this.cache.get(moRef)?.owner],
    }));
  }

  /**
   * One WaitForUpdatesEx. While following changes, a poll with no answer some seconds past its
   * maxWait has stalled: it is cut then, not at the request timeout (see follow()). A snapshot
   * (`following` false) may take as long as the request timeout: it can hold every VM.
   */
  private async poll(pc: MoRef, version: string, following = false) {
    this.polling = true;
    const deadline = following
      ? AbortSignal.timeout(
          (this.opts.maxWaitSeconds + Math.min(POLL_GRACE_SECONDS, this.opts.maxWaitSeconds)) *
            1000,
        )
      : new AbortController().signal;
    try {
      return await runWithSignal(deadline, () =>
        this.session.invoke("WaitForUpdatesEx", pc, {
          version,
          options: { maxWaitSeconds: this.opts.maxWaitSeconds },
        }),
      );
    } catch (err) {
      // vcsim's long poll hangs now and then under a burst of tasks while every other call is
      // answered, and a proxy may cut an idle one: not an outage by itself (see run()).
      const timedOut = deadline.aborted || (err as VSphereUnreachable).code === "ECONNABORTED";
      if (following && timedOut && err instanceof VSphereUnreachable) throw new PollStalled(err);
      throw err;
    } finally {
      this.polling = false;
    }
  }

  private settleStarters(error?: Error): void {
    for (const s of this.starters.splice(0)) {
      if (error) s.reject(error);
      else s.resolve();
    }
  }

  private backoff(failures: number): number {
    const base = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** (failures - 1));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

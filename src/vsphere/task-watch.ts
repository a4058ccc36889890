// Notices the end of the tasks vsop waits for, beside the update loop: while any is in flight,
// one RetrievePropertiesEx of all their states every half second. A task's end also shows in its
// VM, which the update loop reports, but a busy vCenter can hold that long poll for seconds (vcsim
// under a burst of tasks holds it up to its 20 s stall limit, see watch.ts); a read of task states
// answers at once and costs one call per tick for all tasks together. An ended task wakes its
// owner once; the owner reads it (VCenter.taskState) and forgets it.
import type { Logger } from "pino";
import { outsideReconcile } from "../abort.js";
import { faultName } from "./errors.js";
import { propertySpec, retrieve } from "./properties.js";
import type { VSphereSession } from "./session.js";
import { inFlight, taskStateOf } from "./task-state.js";
import { MoRef } from "./xml.js";

/** How often the states of the tasks in flight are read. */
export const TASK_POLL_MS = 500;
/** Tasks read per tick; with more in flight, each tick reads the next ones in turn. */
const MAX_TASKS_PER_READ = 500;

export class TaskWatch {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Tasks whose end woke their owner, which has not forgotten them yet: not read again. */
  private readonly woken = new Set<string>();
  /** Where the next read starts, when more tasks are in flight than one read takes. */
  private next = 0;
  private readCount = 0;
  /** When the last read found each task still running (Date.now()). */
  private readonly seenRunning = new Map<string, number>();

  constructor(
    private readonly session: VSphereSession,
    /** The tasks in flight, by owner key. */
    private readonly inFlight: () => Iterable<[string, { moRef: string }]>,
    private readonly wake: (key: string) => void,
    private readonly log: Logger,
    private readonly periodMs = TASK_POLL_MS,
  ) {}

  /** Someone waits for this task (started, or seen running): read it until it ends. */
  watch(task: string): void {
    this.woken.delete(task);
    this.schedule();
  }

  /**
   * Whether a read at most `maxAgeMs` ago found the task running. Its owner can take that for the
   * task's state without a call of its own: should the task end since, the next tick sees it and
   * wakes the owner, which then reads it.
   */
  runningAsOf(task: string, maxAgeMs: number): boolean {
    const at = this.seenRunning.get(task);
    return at !== undefined && Date.now() - at <= maxAgeMs;
  }

  /** The reads of task states sent so far. */
  get reads(): number {
    return this.readCount;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    // Not part of the reconcile that started the task: its deadline must not cancel the reads.
    this.timer = outsideReconcile(() => setTimeout(() => void this.tick(), this.periodMs));
  }

  private async tick(): Promise<void> {
    const inFlight = [...this.inFlight()];
    const live = new Set(inFlight.map(([, t]) => t.moRef));
    for (const task of this.woken) if (!live.has(task)) this.woken.delete(task);
    for (const task of this.seenRunning.keys()) if (!live.has(task)) this.seenRunning.delete(task);
    const unread = inFlight.filter(([, t]) => !this.woken.has(t.moRef));
    if (this.next >= unread.length) this.next = 0;
    const waiting = unread.slice(this.next, this.next + MAX_TASKS_PER_READ);
    this.next += MAX_TASKS_PER_READ;
    try {
      if (waiting.length) {
        const ended = await this.ended(waiting.map(([, t]) => t.moRef));
        const at = Date.now();
        for (const [key, t] of waiting) {
          if (!ended.has(t.moRef)) {
            this.seenRunning.set(t.moRef, at);
            continue;
          }
          this.seenRunning.delete(t.moRef);
          this.woken.add(t.moRef);
          this.wake(key);
        }
      }
    } catch (err) {
      // The update loop and each owner's own recheck still see the end; the next tick tries again.
      this.log.debug({ err }, "reading the states of tasks in flight failed");
    } finally {
      this.timer = undefined;
      // Asked of the tasks in flight now: one tracked while this read was out found the timer
      // taken (schedule) and is read only if this tick goes on.
      if ([...this.inFlight()].some(([, t]) => !this.woken.has(t.moRef))) this.schedule();
    }
  }

  /** The tasks among these that ended, or that vCenter no longer knows. */
  private async ended(tasks: string[]): Promise<Set<string>> {
    let contents;
    this.readCount++;
    try {
      contents = await retrieve(this.session, {
        // The state alone: the owner reads the rest (VCenter.taskState).
        propSet: [propertySpec("Task", ["info.state"])],
        objectSet: tasks.map((t) => ({ obj: new MoRef("Task", t), skip: false })),
      });
    } catch (err) {
      // One task is gone and vCenter faults the whole read: each owner's own read tells which.
      if (faultName(err) === "ManagedObjectNotFound") return new Set(tasks);
      throw err;
    }
    // Read as VCenter.taskState reads a task (taskStateOf).
    const running = new Set(
      contents.filter((c) => inFlight(taskStateOf(c.props))).map((c) => c.obj.value),
    );
    return new Set(tasks.filter((t) => !running.has(t)));
  }
}

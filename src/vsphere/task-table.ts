// The states of vCenter's recent tasks, fed by the update loop's one filter (folders' and VMs'
// recentTask), so nobody waits on a task with a collector of its own: a reconcile starts a task,
// records it and returns; the end of the task wakes whoever asked for it.
import { applyChange, type ObjectUpdate } from "./cache.js";
import { get, moRef, typeOf } from "./nodes.js";
import { field, text, type MoRef, type Node } from "./xml.js";

export interface TaskContext {
  /** The method that started the task, e.g. CreateVM_Task. */
  method: string;
  /** The object it works on, e.g. vm-42. */
  entity?: string;
}

export type TaskOutcome =
  | { state: "success"; result?: Node }
  | { state: "error"; fault: string; message: string }
  | { state: "queued" | "running" };

/** Reads a task's state out of its info.* properties. */
export function taskOutcome(props: Record<string, Node>): TaskOutcome {
  const state = text(props["info.state"]);
  if (state === "success") return { state, result: props["info.result"] };
  if (state === "error") {
    const err = props["info.error"];
    const fault = typeOf(get(err, "fault")) ?? "Unknown";
    const message = text(field(err, "localizedMessage")) ?? "";
    return { state, fault, message };
  }
  return { state: state === "queued" ? "queued" : "running" };
}

export const TASK_PROPERTIES = ["info.state", "info.error", "info.result", "info.entity"];

/** What is known of a task: its outcome, or "gone" once vCenter no longer lists it. */
export type TaskState = TaskOutcome | { state: "gone" };

export const taskEnded = (s: TaskState | undefined): boolean =>
  s?.state === "success" || s?.state === "error" || s?.state === "gone";

interface Entry {
  props: Record<string, Node>;
  /** The VM (or other object) the task works on, when vCenter says. */
  entity?: MoRef;
}

/** Finished tasks kept after they left recentTask, for a late reader. */
const MAX_GONE = 1000;

export class TaskTable {
  private readonly tasks = new Map<string, Entry>();
  /** Tasks that left recentTask, oldest first, with their last state. */
  private readonly gone = new Map<string, TaskState>();
  private waiters = new Map<string, ((s: TaskState) => void)[]>();

  /** Applies Task updates; returns the tasks that ended (or left) in this batch. */
  apply(updates: ObjectUpdate[]): string[] {
    const ended: string[] = [];
    for (const u of updates) {
      if (u.obj.type !== "Task") continue;
      const ref = u.obj.value;
      if (u.kind === "leave") {
        const last = this.state(ref);
        this.tasks.delete(ref);
        this.remember(ref, taskEnded(last) ? last! : { state: "gone" });
        if (!taskEnded(last)) ended.push(ref);
        continue;
      }
      const before = this.state(ref);
      const entry = this.tasks.get(ref) ?? { props: {} };
      for (const c of u.changeSet) applyChange(entry.props, TASK_PROPERTIES, c);
      entry.entity = moRef(entry.props["info.entity"]);
      this.tasks.set(ref, entry);
      const after = this.state(ref)!;
      if (taskEnded(after) && !taskEnded(before)) ended.push(ref);
    }
    for (const ref of ended) this.settle(ref);
    return ended;
  }

  /** Replaces the table with a full snapshot (after the loop rebuilt its filter). */
  reset(snapshot: ObjectUpdate[]): string[] {
    const known = [...this.tasks.keys()];
    const before = new Map(known.map((ref) => [ref, this.state(ref)]));
    this.tasks.clear();
    const ended = this.apply(snapshot.filter((u) => u.kind === "enter"));
    for (const ref of known) {
      if (this.tasks.has(ref)) {
        if (taskEnded(this.state(ref)) && !taskEnded(before.get(ref)) && !ended.includes(ref))
          ended.push(ref);
        continue;
      }
      const last = before.get(ref);
      this.remember(ref, taskEnded(last) ? last! : { state: "gone" });
      if (!taskEnded(last)) ended.push(ref);
    }
    for (const ref of ended) this.settle(ref);
    return ended;
  }

  state(ref: string): TaskState | undefined {
    const entry = this.tasks.get(ref);
    if (entry) return taskOutcome(entry.props);
    return this.gone.get(ref);
  }

  /** The object the task works on, e.g. vm-42 (undefined when unknown). */
  entity(ref: string): MoRef | undefined {
    return this.tasks.get(ref)?.entity;
  }

  /** Resolves when the task ends or leaves the table (for callers that may wait, not reconciles). */
  whenEnded(ref: string): Promise<TaskState> {
    const now = this.state(ref);
    if (taskEnded(now)) return Promise.resolve(now!);
    return new Promise((resolve) => {
      const list = this.waiters.get(ref) ?? [];
      list.push(resolve);
      this.waiters.set(ref, list);
    });
  }

  /** Gives up on every waiter, e.g. when the loop stops. */
  abandon(state: TaskState): void {
    const waiters = this.waiters;
    this.waiters = new Map();
    for (const list of waiters.values()) for (const w of list) w(state);
  }

  get size(): number {
    return this.tasks.size;
  }

  private remember(ref: string, state: TaskState): void {
    this.gone.delete(ref);
    this.gone.set(ref, state);
    if (this.gone.size > MAX_GONE) this.gone.delete(this.gone.keys().next().value!);
  }

  private settle(ref: string): void {
    const state = this.state(ref);
    const list = this.waiters.get(ref);
    if (!state || !list) return;
    this.waiters.delete(ref);
    for (const w of list) w(state);
  }
}

// Waiting for vSphere tasks by property updates: a filter on the task's info.state in a
// PropertyCollector of our own and WaitForUpdatesEx long polls, never a tight polling loop.
// Collectors are pooled, because vcsim never forgets a destroyed collector's change listener.
import type { Logger } from "pino";
import type { VSphereSession } from "./session.js";
import { MoRef, field, text, type Node } from "./xml.js";
import { get, typeOf } from "./nodes.js";
import { VSphereFault, VSphereTaskError } from "./errors.js";
import { applyChange, parseUpdateSet } from "./cache.js";

const TASK_PROPERTIES = ["info.state", "info.error", "info.result"];
const MAX_POLL_SECONDS = 20;
const MAX_IDLE_COLLECTORS = 4;

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

export class TaskWaiter {
  private idle: MoRef[] = [];

  constructor(
    private readonly session: VSphereSession,
    private readonly log: Logger,
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Waits until the task ends; returns info.result or throws VSphereTaskError. */
  async wait(task: MoRef, ctx: TaskContext): Promise<Node | undefined> {
    const deadline = this.now() + this.timeoutMs;
    const { pc, filter } = await this.watch(task);
    let reusable = false;
    try {
      const props: Record<string, Node> = {};
      let version = "";
      for (;;) {
        const left = deadline - this.now();
        if (left <= 0)
          throw new VSphereTaskError(
            task.value,
            "TaskTimeout",
            `${ctx.method} did not finish within ${this.timeoutMs} ms`,
            { ...ctx },
          );
        const seconds = Math.max(1, Math.min(MAX_POLL_SECONDS, Math.ceil(left / 1000)));
        const res = await this.session.invoke("WaitForUpdatesEx", pc, {
          version,
          options: { maxWaitSeconds: seconds },
        });
        const set = parseUpdateSet(res);
        if (!set) continue;
        version = set.version;
        for (const u of set.updates)
          if (u.obj.value === task.value)
            for (const c of u.changeSet) applyChange(props, TASK_PROPERTIES, c);
        const outcome = taskOutcome(props);
        if (outcome.state === "success") {
          reusable = true;
          this.log.debug({ task: task.value, ...ctx }, "task succeeded");
          return outcome.result;
        }
        if (outcome.state === "error") {
          reusable = true;
          throw new VSphereTaskError(task.value, outcome.fault, outcome.message, { ...ctx });
        }
      }
    } finally {
      await this.release(pc, filter, reusable);
    }
  }

  /** A collector with a filter on `task`, from the pool when one is idle. */
  private async watch(task: MoRef): Promise<{ pc: MoRef; filter: MoRef }> {
    const spec = {
      propSet: [{ type: "Task", all: false, pathSet: TASK_PROPERTIES }],
      objectSet: [{ obj: task, skip: false }],
    };
    for (;;) {
      const pooled = this.idle.pop();
      const pc = pooled ?? (await this.createCollector());
      try {
        const filter = (await this.session.invoke("CreateFilter", pc, {
          spec,
          partialUpdates: false,
        })) as MoRef;
        return { pc, filter };
      } catch (err) {
        // A pooled collector is gone when vCenter restarted or the session was replaced.
        if (pooled && err instanceof VSphereFault && err.fault === "ManagedObjectNotFound") {
          this.idle = [];
          continue;
        }
        throw err;
      }
    }
  }

  private async createCollector(): Promise<MoRef> {
    const root = (await this.session.serviceContent()).propertyCollector;
    return (await this.session.invoke("CreatePropertyCollector", root)) as MoRef;
  }

  private async release(pc: MoRef, filter: MoRef, reusable: boolean): Promise<void> {
    try {
      await this.session.invoke("DestroyPropertyFilter", filter);
    } catch {
      reusable = false;
    }
    if (reusable && this.idle.length < MAX_IDLE_COLLECTORS) {
      this.idle.push(pc);
      return;
    }
    // An interrupted long poll or a surplus collector is not reused.
    await this.session.invoke("DestroyPropertyCollector", pc).catch(() => undefined);
  }

  /** Forgets pooled collectors, e.g. after the session was reset. */
  reset(): void {
    this.idle = [];
  }
}

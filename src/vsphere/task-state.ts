// A vSphere task's state, read from its info.* properties.
import { get, typeOf } from "./nodes.js";
import { field, text, type Node } from "./xml.js";

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

/** A task's state from its properties as read: none at all means vCenter no longer lists it. */
export function taskStateOf(props: Record<string, Node>): TaskState {
  return Object.keys(props).length ? taskOutcome(props) : { state: "gone" };
}

/** Whether the task has yet to end. */
export function inFlight(state: TaskState): boolean {
  return state.state === "queued" || state.state === "running";
}

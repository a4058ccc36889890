// The AbortSignal of the reconcile a piece of code runs in, without threading it through every
// call: the controller runs each reconcile inside a scope, and the HTTP clients (Kubernetes,
// vSphere SOAP and datastore transfers) hand the scope's signal to each request. A deadline or a
// shutdown then cancels whatever request is in flight. Long-lived work that a reconcile happens
// to start (a vCenter's update loop, a broker connection) runs outside the scope.
import { AsyncLocalStorage } from "node:async_hooks";

const scope = new AsyncLocalStorage<AbortSignal>();

export function runWithSignal<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  return scope.run(signal, fn);
}

/** The signal of the reconcile this code runs in, if any. */
export function currentSignal(): AbortSignal | undefined {
  return scope.getStore();
}

/** Runs `fn` outside any reconcile's scope: what it starts outlives the reconcile. */
export function outsideReconcile<T>(fn: () => T): T {
  return scope.exit(fn);
}

/** The reconcile's deadline passed, or the operator is stopping. */
export class ReconcileAborted extends Error {
  override name = "ReconcileAborted";
  constructor(readonly why: string) {
    super(`reconcile aborted: ${why}`);
  }
}

/** Throws ReconcileAborted when the current reconcile's signal fired. */
export function throwIfAborted(): void {
  const signal = currentSignal();
  if (signal?.aborted) throw new ReconcileAborted(abortReason(signal));
}

export function abortReason(signal: AbortSignal): string {
  const r = signal.reason as { name?: string; message?: string } | undefined;
  return r?.name === "TimeoutError" ? "deadline exceeded" : (r?.message ?? "stopping");
}

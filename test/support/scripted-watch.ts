// A watch played from a script, for unit tests of the informer: the events (then the stream
// ends), a failure, or "hang" (open until the caller aborts).
import assert from "node:assert/strict";
import type { Kube, WatchEvent } from "../../src/controller/kube.js";

export type WatchScript<T> = WatchEvent<T>[] | "hang" | { fail: Error };

export function playWatch<T>(
  step: WatchScript<T>,
  onEvent: (e: WatchEvent<T>) => void,
  signal: AbortSignal,
): Promise<void> {
  if (step === "hang")
    return new Promise<void>((r) => {
      if (signal.aborted) r();
      signal.addEventListener("abort", () => r());
    });
  if ("fail" in step) return Promise.reject(step.fail);
  try {
    for (const e of step) onEvent(structuredClone(e));
  } catch (err) {
    return Promise.reject(err as Error);
  }
  return Promise.resolve();
}

/** Polls `cond` every 10 ms, up to 4 s. */
export async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

/** A list played from a script: its items and version, or a failure after some items. */
export type ListScript<T> = { items: T[]; rv: string } | { fail: Error; after?: T[] };

/**
 * The list and watch of a Kube, answered by `next` from scripts per request; every request's
 * verb and query is recorded.
 */
export function scriptedKube<O>(next: {
  list: (query: Record<string, string>) => ListScript<O> | undefined;
  watch: (query: Record<string, string>) => WatchScript<O> | undefined;
}) {
  const requests: { verb: "list" | "watch"; query: Record<string, string> }[] = [];
  const kube: Pick<Kube, "list" | "watch"> = {
    list: <T>(_p: string, query: Record<string, string>, onItem: (item: T) => void) => {
      requests.push({ verb: "list", query });
      const step = (next.list(query) ?? { items: [], rv: "0" }) as ListScript<T>;
      if ("fail" in step) {
        for (const o of step.after ?? []) onItem(structuredClone(o));
        return Promise.reject(step.fail);
      }
      for (const o of step.items) onItem(structuredClone(o));
      return Promise.resolve({ resourceVersion: step.rv });
    },
    watch: <T>(
      _p: string,
      query: Record<string, string>,
      onEvent: (e: WatchEvent<T>) => void,
      signal: AbortSignal,
    ) => {
      requests.push({ verb: "watch", query });
      return playWatch((next.watch(query) ?? "hang") as WatchScript<T>, onEvent, signal);
    },
  };
  return { kube, requests };
}

/** The bookmark that ends a streamed list's initial events, at `rv`. */
export function listEnd<T>(rv: string): WatchEvent<T> {
  const metadata = {
    name: "",
    resourceVersion: rv,
    annotations: { "k8s.io/initial-events-end": "true" },
  };
  return { type: "BOOKMARK", object: { metadata } as T };
}

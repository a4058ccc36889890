// What the informers keep of each object: everything but the metadata vsop never reads. Of a
// VirtualServer as the API server sends it, managedFields are ~40% and kubectl's last-applied
// annotation (a copy of the spec) another ~10%. Nothing written back depends on them: status
// goes to the /status subresource, which takes only status, and a write without managedFields
// leaves the server's own untouched.
import type { ObjectMeta } from "../api/types.js";

export const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** Every field of ObjectMeta, the metadata vsop's types let its code read. */
const KEPT = [
  "name",
  "namespace",
  "uid",
  "generation",
  "resourceVersion",
  "labels",
  "annotations",
  "finalizers",
  "deletionTimestamp",
  "creationTimestamp",
] as const;
// A field added to ObjectMeta and not to KEPT fails to compile here, instead of reading undefined.
const keptAll: Exclude<keyof ObjectMeta, (typeof KEPT)[number]> extends never ? true : never = true;
void keptAll;

/** The object with only ObjectMeta's fields in its metadata, without the last-applied annotation. */
export function trimObject<T extends { metadata?: object }>(obj: T): T {
  const meta = obj.metadata as Record<string, unknown> | undefined;
  if (!meta) return obj;
  const kept: Record<string, unknown> = {};
  for (const k of KEPT) if (meta[k] !== undefined) kept[k] = meta[k];
  const annotations = meta.annotations as Record<string, string> | undefined;
  if (annotations && LAST_APPLIED in annotations) {
    const rest = { ...annotations };
    delete rest[LAST_APPLIED];
    if (Object.keys(rest).length) kept.annotations = rest;
    else delete kept.annotations;
  }
  obj.metadata = kept;
  return obj;
}

// The list-shard label: vsop files each VirtualServer it has reconciled into one of 16 shards, by
// a hash of its name, so that the operator can read its servers at start as several lists in
// parallel. The API server encodes a list on one core (10,000 servers: ~1.5 s); the shards' lists
// are encoded at once. Servers vsop has not labelled yet (new ones, or a label someone edited) are
// read by one more list, of the shards' complement, so every server is read exactly once.

import { GROUP } from "./types.js";

export const LIST_SHARD_LABEL = `${GROUP}/list-shard`;
export const LIST_SHARDS = 16;

/**
 * How many lists of shards the operator reads at start (plus the complement's). On 2 cores, 4
 * synced 10,000 servers sooner than 2 (scale bench); 8 were no better than 4.
 */
export const START_LISTS = 4;

/** The shard of a server by its name (FNV-1a): "0" to "15". */
export function listShardOf(name: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return String((h >>> 0) % LIST_SHARDS);
}

/**
 * Label selectors that split the collection into `parallel` lists of the labelled servers plus
 * one of all others. `notin` also selects objects without the label, and so does each list's
 * complement: together they select every object once.
 */
export function listShardSelectors(parallel: number): string[] {
  const all = Array.from({ length: LIST_SHARDS }, (_, i) => String(i));
  const parts = Array.from({ length: parallel }, (_, p) =>
    all.filter((_, i) => i % parallel === p),
  );
  return [
    ...parts.map((values) => `${LIST_SHARD_LABEL} in (${values.join(",")})`),
    `${LIST_SHARD_LABEL} notin (${all.join(",")})`,
  ];
}

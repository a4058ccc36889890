// The list-shard label: vsop files each VirtualServer it has reconciled into one of 16 shards, by
// a hash of its name, so that the operator can read its servers at start as several lists. An
// API server before 1.33 builds a list whole before it sends a byte (10,000 servers: ~2 s on one
// core); read as 16 small lists, two at a time, the server builds the next while vsop parses the
// last, instead of vsop waiting idle for all of them and then parsing alone. From 1.33 the server
// streams a list as it encodes it, and the shards cost about what one list does. Servers vsop
// has not labelled yet (new ones, or a label someone edited) are read by one more list, of the
// shards' complement, first, so every server is read exactly once.

import { GROUP } from "./types.js";

export const LIST_SHARD_LABEL = `${GROUP}/list-shard`;
export const LIST_SHARDS = 16;

/**
 * How many lists of shards the operator reads at start (plus the complement's), and how many of
 * them at a time. Scale bench, 10,000 servers on 2 cores, Kubernetes 1.32, 3 rounds against 4
 * lists at once in the same run (median time to sync): 16 one at a time 4.54 s against 3.73 s;
 * two at a time 2.86 s against 3.88 s; three at a time (4 rounds) 3.19 s against 3.99 s. The API
 * server also spent less CPU on the small lists (median 2.88 s against 4.21 s, two at a time).
 * On 1.37, 4 rounds against one list: 1.89 s against 1.94 s.
 */
export const START_LISTS = LIST_SHARDS;
export const START_LISTS_IN_FLIGHT = 2;

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
 * Label selectors that split the collection into one list of the servers without a valid shard
 * label, first (after an upgrade from a vsop without the label, that is all of them, and it then
 * overlaps the others rather than following them), and `lists` lists of the labelled ones.
 * `notin` also selects objects without the label: together they select every object once.
 */
export function listShardSelectors(lists: number): string[] {
  const all = Array.from({ length: LIST_SHARDS }, (_, i) => String(i));
  const parts = Array.from({ length: lists }, (_, p) => all.filter((_, i) => i % lists === p));
  return [
    `${LIST_SHARD_LABEL} notin (${all.join(",")})`,
    ...parts.map((values) => `${LIST_SHARD_LABEL} in (${values.join(",")})`),
  ];
}

// Reading decoded vim25 values: everything arrives as strings, lists may collapse to one item,
// and array-typed properties come wrapped (ArrayOfVirtualDevice > VirtualDevice[]).
import { MoRef, list, type Node } from "./xml.js";

export type NodeObject = { [k: string]: Node };

export function isObject(n: Node | undefined): n is NodeObject {
  return typeof n === "object" && n !== null && !Array.isArray(n) && !(n instanceof MoRef);
}

/** The xsi:type of a node, without prefix. */
export function typeOf(n: Node | undefined): string | undefined {
  return isObject(n) && typeof n._type === "string" ? n._type : undefined;
}

/** The items of an array-typed value, whether wrapped in ArrayOfX, a list, or one collapsed item. */
export function items(n: Node | undefined): Node[] {
  if (isObject(n) && typeOf(n)?.startsWith("ArrayOf")) {
    const inner = Object.keys(n).find((k) => k !== "_type");
    return inner ? list(n[inner]) : [];
  }
  return list(n);
}

/** Unwraps ArrayOfX values to plain lists so stored properties have one shape. */
export function normalize(n: Node | undefined): Node | undefined {
  return isObject(n) && typeOf(n)?.startsWith("ArrayOf") ? items(n) : n;
}

export function str(n: Node | undefined): string | undefined {
  return typeof n === "string" ? n : undefined;
}

export function num(n: Node | undefined): number | undefined {
  if (typeof n !== "string" || n.trim() === "") return undefined;
  const v = Number(n);
  return Number.isFinite(v) ? v : undefined;
}

export function bool(n: Node | undefined): boolean | undefined {
  return n === "true" ? true : n === "false" ? false : undefined;
}

export function get(n: Node | undefined, ...path: string[]): Node | undefined {
  let cur = n;
  for (const p of path) cur = isObject(cur) ? cur[p] : undefined;
  return cur;
}

export function moRef(n: Node | undefined): MoRef | undefined {
  return n instanceof MoRef ? n : undefined;
}

/** A deep copy, so values sent back to vSphere never alias the cache. */
export function clone<T extends Node>(n: T): T {
  if (Array.isArray(n)) return n.map((x) => clone(x)) as T;
  if (isObject(n)) {
    const out: NodeObject = {};
    for (const [k, v] of Object.entries(n)) out[k] = clone(v);
    return out as T;
  }
  return n;
}

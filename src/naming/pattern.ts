// A class's naming.pattern runs on Node's backtracking regex engine, on the event loop: one
// catastrophic pattern freezes health checks and lease renewal. So a pattern is vetted once,
// before it ever runs on a hostname, and the verdict is kept per pattern string.
//
// The verdict is safe-regex2's (star height ≤ 1, at most 25 quantifiers) plus what star height
// misses: alternatives inside a repeated group, as in (a|aa)+. That extra rule walks the tree of
// ret, the parser safe-regex2 is built on, so both see the pattern alike; the walk also names the
// offending construct for the message.
import ret, { reconstruct, types, type Tokens, type tokenizer } from "ret";
import safeRegex from "safe-regex2";
import { StepError } from "../errors.js";

export const MAX_PATTERN_LENGTH = 512;
const MAX_QUANTIFIERS = 25; // safe-regex2's default, named for the message
const REQUIRED_GROUPS = ["apptype", "environment", "instance"] as const;
const CACHE_SIZE = 64;
// ret is CommonJS whose module.exports is the tokenizer; its typings only declare it as `default`.
const parse = ret as unknown as typeof tokenizer;

type Verdict = { re: RegExp } | { refused: string };
const verdicts = new Map<string, Verdict>();

/** The compiled pattern, or StepError InvalidClass saying what to change. Checked once per string. */
export function compilePattern(pattern: string): RegExp {
  let verdict = verdicts.get(pattern);
  if (!verdict) {
    verdict = vet(pattern);
    remember(pattern, verdict);
  }
  if ("refused" in verdict) throw invalidClass(verdict.refused);
  return verdict.re;
}

/** Marks a pattern refused after the fact (it ran too long despite passing the checks). */
export function refusePattern(pattern: string, why: string): StepError {
  remember(pattern, { refused: why });
  return invalidClass(why);
}

function remember(pattern: string, verdict: Verdict): void {
  verdicts.delete(pattern);
  if (verdicts.size >= CACHE_SIZE) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(pattern, verdict);
}

function invalidClass(why: string): StepError {
  return new StepError("InvalidClass", `The class's naming.pattern is refused: ${why}.`, {
    condition: "NameResolved",
  });
}

function vet(pattern: string): Verdict {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    return {
      refused: `it is ${pattern.length} characters long, at most ${MAX_PATTERN_LENGTH} are allowed`,
    };
  }
  let re: RegExp;
  let tree: Tokens;
  try {
    re = new RegExp(pattern);
  } catch (err) {
    return { refused: `it is not a valid regular expression (${(err as Error).message})` };
  }
  try {
    tree = parse(pattern);
  } catch (err) {
    // ret does not know every construct V8 does (lookbehind, for one).
    return {
      refused: `it uses syntax the backtracking check cannot read (${(err as Error).message}); leave that construct out`,
    };
  }
  const risky = riskyConstruct(tree, undefined);
  if (risky || !safeRegex(pattern, { limit: MAX_QUANTIFIERS })) {
    return {
      refused:
        (risky ?? `it has more than ${MAX_QUANTIFIERS} quantifiers`) +
        ", which can backtrack catastrophically and freeze vsop on a hostname that does not match;" +
        " quantify only single characters or character classes, e.g. [a-z0-9-]+ or [a-z0-9.-]+",
    };
  }
  const names = new Set(groupNames(tree));
  const missing = REQUIRED_GROUPS.filter((g) => !names.has(g));
  if (missing.length) {
    return {
      refused: `it lacks the named group${missing.length > 1 ? "s" : ""} ${missing
        .map((g) => `(?<${g}>…)`)
        .join(", ")}; add ${missing.length > 1 ? "them" : "it"}`,
    };
  }
  return { re };
}

/** The first quantifier over a quantifier, or alternation under a repeat, described for people. */
function riskyConstruct(node: Tokens, repeat: Tokens | undefined): string | undefined {
  switch (node.type) {
    case types.REPETITION: {
      const inner = firstQuantifier(node.value);
      if (inner === node.value) {
        return `${reconstruct(node)} stacks two quantifiers (lazy ones such as +? count as that)`;
      }
      if (inner) {
        return `${reconstruct(node)} quantifies a group that itself contains the quantifier ${reconstruct(inner)}`;
      }
      return riskyConstruct(node.value, repeat ?? (node.max === 1 ? undefined : node));
    }
    case types.ROOT:
    case types.GROUP: {
      if (node.options && repeat) {
        return `${reconstruct(repeat)} repeats alternatives that can match the same text in several ways`;
      }
      for (const t of node.stack ?? node.options?.flat() ?? []) {
        const found = riskyConstruct(t, repeat);
        if (found) return found;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

function firstQuantifier(node: Tokens): Tokens | undefined {
  if (node.type === types.REPETITION) return node;
  if (node.type !== types.ROOT && node.type !== types.GROUP) return undefined;
  for (const t of node.stack ?? node.options?.flat() ?? []) {
    const found = firstQuantifier(t);
    if (found) return found;
  }
  return undefined;
}

function groupNames(node: Tokens): string[] {
  if (node.type === types.REPETITION) return groupNames(node.value);
  if (node.type !== types.ROOT && node.type !== types.GROUP) return [];
  const own = node.type === types.GROUP && node.name ? [node.name] : [];
  return [...own, ...(node.stack ?? node.options?.flat() ?? []).flatMap(groupNames)];
}

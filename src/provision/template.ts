// A small logic-less template engine for kickstart and cloud-init files. It never evaluates
// code: tags only look values up by name. A missing value is an error, not an empty string,
// because a kickstart with an empty `--nameserver=` installs a broken server silently.
//
//   {{ name }}  {{ services.dns }}         a scalar value (string, number, boolean)
//   {{#each list}} {{this}} {{/each}}       a loop; `this` is the item, `@index` its position
//   {{#if x}} … {{else}} … {{/if}}          missing, false, "", 0 and [] count as false
//   {{! comment }}
//
// A block tag alone on its line removes that whole line (as in Mustache), so templates can
// put `{{#if}}` on its own line without leaving blank lines behind.

export class TemplateError extends Error {
  override name = "TemplateError";
  constructor(
    /** The template's name, e.g. "kickstart". */
    readonly template: string,
    /** 1-based line of the offending tag. */
    readonly line: number,
    readonly detail: string,
  ) {
    super(`template "${template}" line ${line}: ${detail}`);
  }
}

type Node =
  | { kind: "text"; text: string }
  | { kind: "var"; path: string; line: number }
  | { kind: "each" | "if"; path: string; line: number; body: Node[]; otherwise: Node[] };

type Token = { kind: "text"; text: string } | { kind: "tag"; tag: Tag; line: number };

type Tag =
  | { kind: "var"; path: string }
  | { kind: "open"; block: "each" | "if"; path: string }
  | { kind: "else" }
  | { kind: "close"; block: "each" | "if" }
  | { kind: "comment" };

const PATH = /^(?:this|@index|[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*$/;

export interface Template {
  readonly name: string;
  render(vars: object): string;
}

/** Parses a template once; syntax errors (unclosed blocks, bad tags) are thrown here. */
export function compileTemplate(name: string, source: string): Template {
  const nodes = parse(name, tokenize(name, source));
  return { name, render: (vars) => render(name, nodes, [{ value: vars }]) };
}

export function renderTemplate(name: string, source: string, vars: object): string {
  return compileTemplate(name, source).render(vars);
}

function tokenize(name: string, source: string): Token[] {
  const tokens: Token[] = [];
  let pos = 0;
  let line = 1;
  const advance = (to: number) => {
    for (let i = pos; i < to; i++) if (source.charCodeAt(i) === 10) line++;
    pos = to;
  };
  while (pos < source.length) {
    const open = source.indexOf("{{", pos);
    if (open < 0) {
      tokens.push({ kind: "text", text: source.slice(pos) });
      break;
    }
    if (open > pos) tokens.push({ kind: "text", text: source.slice(pos, open) });
    advance(open);
    const close = source.indexOf("}}", open + 2);
    if (close < 0) throw new TemplateError(name, line, `unterminated tag "{{" (missing "}}")`);
    tokens.push({ kind: "tag", tag: parseTag(name, line, source.slice(open + 2, close)), line });
    advance(close + 2);
  }
  markStandalone(tokens);
  return tokens;
}

function parseTag(name: string, line: number, raw: string): Tag {
  const body = raw.trim();
  if (body.startsWith("!")) return { kind: "comment" };
  if (body === "else") return { kind: "else" };
  const block = /^([#/])(each|if)\b\s*(.*)$/.exec(body);
  if (block) {
    const sigil = block[1];
    const kind = block[2] as "each" | "if";
    const arg = block[3] ?? "";
    if (sigil === "/") {
      if (arg !== "") throw new TemplateError(name, line, `unexpected text in "{{/${kind}}}"`);
      return { kind: "close", block: kind };
    }
    if (!PATH.test(arg))
      throw new TemplateError(name, line, `"{{#${kind}}}" needs a variable name, got "${arg}"`);
    return { kind: "open", block: kind, path: arg };
  }
  if (!PATH.test(body)) throw new TemplateError(name, line, `invalid tag "{{${raw}}}"`);
  return { kind: "var", path: body };
}

/** Marks block tags that are alone on their line and trims that line from the neighbours. */
function markStandalone(tokens: Token[]): void {
  const cuts: Array<{ index: number; start?: number; end?: number }> = [];
  tokens.forEach((t, i) => {
    if (t.kind !== "tag" || t.tag.kind === "var") return;
    const prev = tokens[i - 1];
    const next = tokens[i + 1];
    if (prev && prev.kind !== "text") return;
    if (next && next.kind !== "text") return;
    const before = prev ? prev.text : "";
    const after = next ? next.text : "";
    const lineStart = before.lastIndexOf("\n") + 1;
    if (!/^[ \t]*$/.test(before.slice(lineStart))) return;
    if (lineStart === 0 && i > 1) return; // the text before is mid-line, after another tag
    const nl = after.indexOf("\n");
    const rest = nl < 0 ? after : after.slice(0, nl);
    if (!/^[ \t\r]*$/.test(rest)) return;
    if (nl < 0 && i + 2 < tokens.length) return; // more tags follow on this line
    if (prev) cuts.push({ index: i - 1, end: lineStart });
    if (next) cuts.push({ index: i + 1, start: nl < 0 ? after.length : nl + 1 });
  });
  // Cut after deciding, so that two standalone tags sharing one text both see the original.
  const bounds = new Map<number, { start: number; end: number }>();
  for (const c of cuts) {
    const text = (tokens[c.index] as { text: string }).text;
    const b = bounds.get(c.index) ?? { start: 0, end: text.length };
    if (c.start !== undefined) b.start = c.start;
    if (c.end !== undefined) b.end = c.end;
    bounds.set(c.index, b);
  }
  for (const [index, b] of bounds) {
    const t = tokens[index] as { kind: "text"; text: string };
    t.text = t.text.slice(b.start, Math.max(b.start, b.end));
  }
}

function parse(name: string, tokens: Token[]): Node[] {
  type Frame = {
    node: Extract<Node, { kind: "each" | "if" }>;
    inElse: boolean;
  };
  const root: Node[] = [];
  const stack: Frame[] = [];
  const out = () => {
    const top = stack[stack.length - 1];
    if (!top) return root;
    return top.inElse ? top.node.otherwise : top.node.body;
  };
  for (const t of tokens) {
    if (t.kind === "text") {
      if (t.text) out().push({ kind: "text", text: t.text });
      continue;
    }
    const tag = t.tag;
    switch (tag.kind) {
      case "comment":
        break;
      case "var":
        out().push({ kind: "var", path: tag.path, line: t.line });
        break;
      case "open": {
        const node: Frame["node"] = {
          kind: tag.block,
          path: tag.path,
          line: t.line,
          body: [],
          otherwise: [],
        };
        out().push(node);
        stack.push({ node, inElse: false });
        break;
      }
      case "else": {
        const top = stack[stack.length - 1];
        if (!top) throw new TemplateError(name, t.line, `"{{else}}" outside a block`);
        if (top.inElse)
          throw new TemplateError(
            name,
            t.line,
            `second "{{else}}" in {{#${top.node.kind} ${top.node.path}}} opened at line ${top.node.line}`,
          );
        top.inElse = true;
        break;
      }
      case "close": {
        const top = stack.pop();
        if (!top)
          throw new TemplateError(name, t.line, `"{{/${tag.block}}}" without an opening tag`);
        if (top.node.kind !== tag.block)
          throw new TemplateError(
            name,
            t.line,
            `"{{/${tag.block}}}" closes {{#${top.node.kind} ${top.node.path}}} opened at line ${top.node.line}`,
          );
        break;
      }
    }
  }
  const open = stack.pop();
  if (open)
    throw new TemplateError(
      name,
      open.node.line,
      `unclosed block {{#${open.node.kind} ${open.node.path}}} (missing "{{/${open.node.kind}}}")`,
    );
  return root;
}

interface Scope {
  value: unknown;
  index?: number;
}

function render(name: string, nodes: Node[], scopes: Scope[]): string {
  let out = "";
  for (const node of nodes) {
    switch (node.kind) {
      case "text":
        out += node.text;
        break;
      case "var": {
        const v = lookup(node.path, scopes);
        if (v === undefined || v === null)
          throw new TemplateError(name, node.line, `undefined variable "${node.path}"`);
        if (typeof v === "string") out += v;
        else if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint")
          out += String(v);
        else
          throw new TemplateError(
            name,
            node.line,
            `variable "${node.path}" is ${Array.isArray(v) ? "a list" : "an object"}, not a value`,
          );
        break;
      }
      case "if": {
        const v = lookup(node.path, scopes);
        out += render(name, truthy(v) ? node.body : node.otherwise, scopes);
        break;
      }
      case "each": {
        const v = lookup(node.path, scopes);
        if (v === undefined || v === null)
          throw new TemplateError(name, node.line, `undefined variable "${node.path}"`);
        if (!Array.isArray(v))
          throw new TemplateError(name, node.line, `variable "${node.path}" is not a list`);
        if (v.length === 0) out += render(name, node.otherwise, scopes);
        v.forEach((item: unknown, index) => {
          out += render(name, node.body, [...scopes, { value: item, index }]);
        });
        break;
      }
    }
  }
  return out;
}

function truthy(v: unknown): boolean {
  return Array.isArray(v) ? v.length > 0 : Boolean(v);
}

/** Own properties only, so `constructor` or `__proto__` never reach the prototype chain. */
function own(obj: unknown, key: string): unknown {
  if (obj === null || typeof obj !== "object") return undefined;
  return Object.prototype.hasOwnProperty.call(obj, key)
    ? (obj as Record<string, unknown>)[key]
    : undefined;
}

function lookup(path: string, scopes: Scope[]): unknown {
  const [head, ...rest] = path.split(".") as [string, ...string[]];
  const inner = scopes[scopes.length - 1]!;
  let value: unknown;
  if (head === "this") value = inner.value;
  else if (head === "@index") value = inner.index;
  else {
    // Innermost scope first, so a loop item's fields shadow the outer variables.
    for (let i = scopes.length - 1; i >= 0; i--) {
      const v = own(scopes[i]!.value, head);
      if (v !== undefined) {
        value = v;
        break;
      }
    }
  }
  for (const key of rest) value = own(value, key);
  return value;
}

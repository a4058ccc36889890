// What no log, Event or status may ever carry: shapes of credentials, plus the literal secrets a
// test knows (a ServiceAccount token, a password, an install token).
const SHAPES: [string, RegExp][] = [
  ["a PEM private key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/],
  ["a bearer token", /Bearer [A-Za-z0-9._~+/=-]{8,}/],
  ["a JWT", /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\./],
  ["an install token in a URL", /\/(ks|bootstrap|built)\/[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/],
];

/** What of the above the text carries, by name (empty when clean). */
export function secretHits(text: string, literals: Record<string, string> = {}): string[] {
  const hits = SHAPES.filter(([, re]) => re.test(text)).map(([what]) => what);
  for (const [what, value] of Object.entries(literals))
    if (value && text.includes(value)) hits.push(what);
  return hits;
}

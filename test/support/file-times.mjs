// A node:test reporter that prints, after the run, the time each test file's top-level tests took
// (their hooks not included), longest first. The Makefile runs e2e files several at a time, the
// longest first; this is what to order them by.
export default async function* fileTimes(source) {
  const files = new Map();
  for await (const event of source) {
    const { file, nesting, details } = event.data ?? {};
    if (!file || nesting !== 0 || (event.type !== "test:pass" && event.type !== "test:fail"))
      continue;
    files.set(file, (files.get(file) ?? 0) + (details?.duration_ms ?? 0));
  }
  yield "# seconds per file (its tests, hooks not included)\n";
  for (const [file, ms] of [...files].sort(([, a], [, b]) => b - a))
    yield `# ${(ms / 1000).toFixed(1).padStart(6)}  ${file.replace(`${process.cwd()}/`, "")}\n`;
}

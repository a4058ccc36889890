#!/usr/bin/env node
// kubectl-vsop: the `kubectl vsop` plugin's executable (package.json bin; `make plugin` links it
// onto PATH). The commands live in plugin.ts.
import { runPlugin } from "./plugin.js";
import { UsageError } from "./run-flags.js";

runPlugin(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`kubectl-vsop: ${err.message}\nSee kubectl vsop --help.\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`kubectl-vsop: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);

#!/usr/bin/env node
// vsop command line: `vsop run` (the operator), `vsop mco …` (MCollective debugging), `--version`.
import { enableCompileCache } from "node:module";
import { parseRunFlags, runHelp, UsageError } from "./cli/run-flags.js";
import { version } from "./version.js";

export { version };

const USAGE = `Usage: vsop <command> [flags]

Commands:
  run        run the VirtualServer operator (vsop run --help)
  mco        talk to servers through MCollective (vsop mco --help)

Flags:
  --version  print the version
  --help     show this help
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "--version":
    case "version":
      process.stdout.write(`vsop ${version()}\n`);
      return 0;
    case undefined:
    case "--help":
    case "help":
      process.stdout.write(USAGE);
      return 0;
    case "run": {
      const config = parseRunFlags(rest);
      if (config.help) {
        process.stdout.write(runHelp());
        return 0;
      }
      // V8's compiled code for the modules loaded below, kept on disk (NODE_COMPILE_CACHE, else
      // the temporary directory; the image ships one): a restart compiles none of them again.
      // Loading is on the way to the first lists and competes with the API server for CPU.
      // Nothing fails if the directory cannot be used.
      enableCompileCache();
      // The caches' lists go out before the rest of the operator loads (caches.ts).
      const caches = await (await import("./caches.js")).startCaches(config);
      const { runOperator } = await import("./operator.js");
      return runOperator(config, caches);
    }
    case "mco": {
      const { runMco } = await import("./cli/mco.js");
      return runMco(rest);
    }
    default:
      throw new UsageError(`unknown command "${command}"\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`vsop: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`vsop: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);

// Structured pino logging: JSON for machines, `--log-format=pretty` for people. Every line passes
// redact.ts: errors through the allow-list serializer, every string scrubbed, secret-named keys
// dropped, so a field added anywhere later cannot carry a credential out.
import { pino, type Logger, type LevelWithSilent } from "pino";
import { sanitize, scrub } from "./redact.js";

export type LogFormat = "json" | "pretty";
export type { Logger };

export function createLogger(
  level: LevelWithSilent = "info",
  format: LogFormat = "json",
  destination?: pino.DestinationStream,
): Logger {
  const options: pino.LoggerOptions = {
    level,
    // No base fields: a component's child logger adds `component`, and pino would write a base
    // one beside it (two keys of one name in a line, which strict JSON readers refuse).
    base: {},
    timestamp: pino.stdTimeFunctions.isoTime,
    // formatters.log already turned errors into SafeErrors; pino's own err serializer would
    // add a stack back.
    serializers: { err: (v: unknown) => v },
    formatters: { log: (obj) => sanitize(obj) as Record<string, unknown> },
    hooks: {
      logMethod(args, method) {
        method.apply(
          this,
          args.map((a) => (typeof a === "string" ? scrub(a) : a)) as Parameters<typeof method>,
        );
      },
    },
  };
  if (format === "pretty") {
    return pino({
      ...options,
      transport: { target: "pino-pretty", options: { colorize: true, ignore: "pid,hostname" } },
    });
  }
  return destination ? pino(options, destination) : pino(options);
}

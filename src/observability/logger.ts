// Structured pino logging: JSON for machines, `--log-format=pretty` for people.
import { pino, type Logger, type LevelWithSilent } from "pino";

export type LogFormat = "json" | "pretty";
export type { Logger };

/** Fields that must never reach a log line, wherever they appear. */
const REDACT = [
  "password",
  "*.password",
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "privateKey",
  "*.privateKey",
];

export function createLogger(level: LevelWithSilent = "info", format: LogFormat = "json"): Logger {
  const options = {
    level,
    base: { component: "vsop" },
    redact: { paths: REDACT, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (format === "pretty") {
    return pino({
      ...options,
      transport: { target: "pino-pretty", options: { colorize: true, ignore: "pid,hostname" } },
    });
  }
  return pino(options);
}

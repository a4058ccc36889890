// `vsop mco …`: talk to MCollective nodes the way the operator does, for debugging. Prints JSON.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { McoClient } from "../mcollective/client.js";
import { McoConnectionError, McoRpcError, McoTimeout } from "../mcollective/errors.js";
import { PuppetClient } from "../mcollective/puppet.js";
import { parseDuration, UsageError } from "./run-flags.js";

export const MCO_USAGE = `Usage: vsop mco <command> [flags]

Commands:
  ping [--identity FQDN]           nodes that answer rpcutil#ping (every node, or one)
  puppet runonce <identity>        start a Puppet run [--environment E] [--noop] [--tags a,b]
  puppet status <identity>         is Puppet applying, enabled; when did it last run
  puppet last-run <identity>       the last run's summary (changed, failed, total resources)

Flags:
  --url URL                    AMQP broker (default $VSOP_AMQP_URL)
  --ca FILE                    CA bundle for amqps:// URLs
  --client-key FILE            client private key (default $VSOP_MCO_DIR/vsop-private.pem)
  --client-cert-name NAME      servers know the client as cert=NAME (default vsop)
  --server-public-key FILE     the servers' public key (default $VSOP_MCO_DIR/server-public.pem)
  --collective NAME            collective (default mcollective)
  --timeout DURATION           how long to wait for replies, e.g. 10s (default 10s);
                               a ping of every node always waits this long
  --help                       show this help
`;

/** `vsop mco` flags (kubectl vsop mco takes the connection ones too). */
export const MCO_FLAGS = {
  url: { type: "string" },
  ca: { type: "string" },
  "client-key": { type: "string" },
  "client-cert-name": { type: "string" },
  "server-public-key": { type: "string" },
  collective: { type: "string" },
  timeout: { type: "string" },
  identity: { type: "string" },
  environment: { type: "string" },
  noop: { type: "boolean" },
  tags: { type: "string" },
  help: { type: "boolean" },
} as const;

export type McoCommand =
  | { kind: "help" }
  | { kind: "ping"; identity?: string }
  | {
      kind: "runonce";
      identity: string;
      environment?: string;
      noop: boolean;
      tags?: string[];
    }
  | { kind: "status" | "last-run"; identity: string };

export interface McoConnection {
  url: string;
  caFile?: string;
  clientKeyFile: string;
  clientCertName: string;
  serverPublicKeyFile: string;
  collective: string;
  timeoutMs: number;
}

/** Parses `vsop mco` arguments; defaults come from VSOP_AMQP_URL and the files in VSOP_MCO_DIR. */
export function parseMcoArgs(
  args: string[],
  env: NodeJS.ProcessEnv,
): { command: McoCommand; connection: McoConnection } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: MCO_FLAGS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values: v, positionals: p } = parsed;
  const dir = env.VSOP_MCO_DIR;
  const need = (value: string | undefined, flag: string, hint: string): string => {
    if (!value) throw new UsageError(`--${flag} is required (${hint})`);
    return value;
  };
  const connection: McoConnection = {
    url: v.url ?? env.VSOP_AMQP_URL ?? "",
    caFile: v.ca,
    clientKeyFile: v["client-key"] ?? (dir ? join(dir, "vsop-private.pem") : ""),
    clientCertName: v["client-cert-name"] ?? "vsop",
    serverPublicKeyFile: v["server-public-key"] ?? (dir ? join(dir, "server-public.pem") : ""),
    collective: v.collective ?? "mcollective",
    timeoutMs: parseDuration(v.timeout ?? "10s", "timeout") * 1000,
  };
  if (v.help || p.length === 0) return { command: { kind: "help" }, connection };
  need(connection.url, "url", "or set VSOP_AMQP_URL");
  need(connection.clientKeyFile, "client-key", "or set VSOP_MCO_DIR");
  need(connection.serverPublicKeyFile, "server-public-key", "or set VSOP_MCO_DIR");

  const runonceOnly = v.environment !== undefined || v.noop || v.tags !== undefined;
  const [group, action, identity, ...extra] = p;
  if (group === "ping") {
    if (p.length > 1) throw new UsageError(`ping takes no arguments; use --identity`);
    if (runonceOnly)
      throw new UsageError("--environment, --noop and --tags go with puppet runonce");
    return { command: { kind: "ping", identity: v.identity }, connection };
  }
  if (group !== "puppet") throw new UsageError(`unknown command "${group}"\n\n${MCO_USAGE}`);
  if (action !== "runonce" && action !== "status" && action !== "last-run")
    throw new UsageError(`puppet ${action ?? ""}: expected runonce, status or last-run`);
  if (!identity || extra.length > 0)
    throw new UsageError(`puppet ${action} takes exactly one identity (the node's FQDN)`);
  if (action !== "runonce") {
    if (runonceOnly)
      throw new UsageError("--environment, --noop and --tags go with puppet runonce");
    return { command: { kind: action, identity }, connection };
  }
  return {
    command: {
      kind: "runonce",
      identity,
      environment: v.environment,
      noop: v.noop === true,
      tags: v.tags?.split(",").filter((t) => t !== ""),
    },
    connection,
  };
}

function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

export type McoAction = Exclude<McoCommand, { kind: "help" }>;

/**
 * Runs one MCollective command. value is what `vsop mco` prints as JSON; code 1 for a node that
 * did not answer, a refused request or an unreachable broker.
 */
export async function execMco(
  command: McoAction,
  c: McoConnection,
): Promise<{ code: number; value: unknown }> {
  const client = new McoClient({
    url: c.url,
    caBundle: c.caFile ? readFile(c.caFile, "CA bundle") : undefined,
    collective: c.collective,
    clientPrivateKeyPem: readFile(c.clientKeyFile, "client key"),
    clientCertName: c.clientCertName,
    serverPublicKeyPem: readFile(c.serverPublicKeyFile, "server public key"),
    // Logs go to stderr so that stdout stays one JSON document.
    logger: pino(
      { level: "warn", base: { component: "vsop-mco" } },
      pino.destination({ dest: 2, sync: true }),
    ),
  });
  try {
    await client.connect();
    if (command.kind === "ping") {
      const replied = await client.discover(command.identity, c.timeoutMs);
      const missing = command.identity && !replied.includes(command.identity);
      return {
        code: missing ? 1 : 0,
        value: { replied, missing: missing ? [command.identity] : [] },
      };
    }
    const puppet = new PuppetClient(client, { timeoutMs: c.timeoutMs });
    if (command.kind === "runonce") {
      const { identity, environment, noop, tags } = command;
      return { code: 0, value: await puppet.runonce(identity, { environment, noop, tags }) };
    }
    if (command.kind === "status") return { code: 0, value: await puppet.status(command.identity) };
    return { code: 0, value: await puppet.lastRunSummary(command.identity) };
  } catch (err) {
    if (
      err instanceof McoTimeout ||
      err instanceof McoRpcError ||
      err instanceof McoConnectionError
    )
      return { code: 1, value: { error: err.name, message: err.message } };
    throw err;
  } finally {
    await client.close();
  }
}

/** Runs `vsop mco …`; returns the exit code (usage errors throw UsageError). */
export async function runMco(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  const { command, connection } = parseMcoArgs(args, env);
  if (command.kind === "help") {
    out.write(MCO_USAGE);
    return 0;
  }
  const { code, value } = await execMco(command, connection);
  out.write(`${JSON.stringify(value, null, 2)}\n`);
  return code;
}

// The servers' mcollectived, played in this process for the bench and the chaos campaign (running
// N real mcollectived is too heavy): it answers puppet#runonce (a run that finishes at once),
// puppet#last_run_summary, puppet#status and rpcutil#ping for the identities it serves, signed
// with the stack's server key as mcollectived would, and, for a server installed with its own
// identity key, with the signed statement of mcollective/agent/puppet.rb. It logs every runonce.
import { createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import amqp from "amqplib";
import {
  encodeReplyBody,
  encodeReplyEnvelope,
  loadRuby,
  type RubyValue,
} from "../../src/mcollective/marshal.js";
import { signBody } from "../../src/mcollective/security.js";
import { stackEnv } from "./env.js";

/** One runonce request the fleet received. */
export interface FleetRun {
  identity: string;
  /** Which install of the identity it reached (1 for the first; each install() adds one). */
  generation: number;
  requestId: string;
  at: number;
}

export interface Fleet {
  /**
   * From now on the fleet answers for `identity` (a freshly installed system): with
   * `identityKeyPem`, its replies carry the statement signed with that key.
   */
  install(identity: string, identityKeyPem?: string): Promise<void>;
  /** Every runonce received, in order. */
  readonly runs: FleetRun[];
  /** Called as soon as a runonce arrives, before it is answered. */
  onRunonce?: (run: FleetRun) => void;
  replies(): number;
  stop(): Promise<void>;
}

const text = (v: unknown) =>
  v instanceof Uint8Array ? Buffer.from(v).toString("utf8") : String(v ?? "");

/** Serves `identities` at once (no identity key: an image that needed no install). */
export async function startFleet(identities: string[] = []): Promise<Fleet> {
  const serverKey = readFileSync(path.join(stackEnv("VSOP_MCO_DIR"), "server-private.pem"), "utf8");
  const conn = await amqp.connect(stackEnv("VSOP_AMQP_URL"));
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true });
  const served = new Map<
    string,
    { key?: ReturnType<typeof createPrivateKey>; generation: number }
  >();
  const lastrun = new Map<string, number>();
  let replies = 0;

  const fleet: Fleet = {
    runs: [],
    async install(identity, identityKeyPem) {
      const generation = (served.get(identity)?.generation ?? 0) + 1;
      served.set(identity, {
        key: identityKeyPem ? createPrivateKey(identityKeyPem) : undefined,
        generation,
      });
      lastrun.delete(identity);
      await ch.bindQueue(queue, "mcollective_directed", identity);
    },
    replies: () => replies,
    async stop() {
      await ch.close().catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
  for (const id of identities) await fleet.install(id);

  await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      const req = loadRuby(msg.content) as Record<string, unknown>;
      const secure = loadRuby(req.body as Uint8Array) as Record<string, Record<string, unknown>>;
      const rpc = secure.ssl_msg!;
      const agent = text(rpc.agent);
      const action = text(rpc.action);
      const identity = text((req.filter as { identity?: unknown[] }).identity?.[0]);
      const server = served.get(identity);
      if (!server) return;
      const requestId = text(req.requestid);
      const now = Math.floor(Date.now() / 1000);
      let data: Record<string, RubyValue>;
      if (agent === "rpcutil" && action === "ping") {
        data = { pong: now };
      } else if (action === "runonce") {
        const run = { identity, generation: server.generation, requestId, at: Date.now() };
        fleet.runs.push(run);
        fleet.onRunonce?.(run);
        lastrun.set(identity, now);
        data = {
          summary: "Started a Puppet run using the 'puppet agent --onetime' command",
          initiated_at: now,
        };
      } else if (action === "status") {
        const at = lastrun.get(identity) ?? 0;
        data = {
          applying: false,
          enabled: true,
          idling: true,
          daemon_present: false,
          lastrun: at,
          since_lastrun: now - at,
          status: "idling",
          message: "Currently idling",
          disable_message: "",
        };
      } else if (action === "last_run_summary") {
        const at = lastrun.get(identity) ?? 0;
        data = {
          changed_resources: 1,
          failed_resources: 0,
          out_of_sync_resources: 1,
          total_resources: 7,
          total_time: 0.42,
          config_retrieval_time: 0.1,
          lastrun: at,
          since_lastrun: now - at,
          config_version: "fleet",
        };
      } else {
        data = {};
      }
      if (server.key && agent === "puppet") {
        // mcollective/agent/puppet.rb's after_processing_hook
        const statement = JSON.stringify({
          requestid: requestId,
          identity,
          agent,
          action,
          statuscode: 0,
          statusmsg: "OK",
          data,
        });
        data = {
          ...data,
          vsop_signed: statement,
          vsop_signature: sign("sha256", Buffer.from(statement), server.key).toString("base64"),
        };
      }
      const body = encodeReplyBody({ statuscode: 0, statusmsg: "OK", data });
      const reply = encodeReplyEnvelope({
        senderid: identity,
        requestid: requestId,
        senderagent: agent,
        msgtime: now,
        body,
        hash: signBody(body, serverKey),
      });
      ch.sendToQueue(msg.properties.replyTo as string, reply);
      replies++;
    },
    { noAck: true },
  );
  return fleet;
}

// A synchronous GET against the stack's API server, as the admin kubeconfig's client, for the
// probes that tests run every 250 ms (getVS: most of the e2e runs' ~2,400 kubectl processes,
// each ~0.08 s of CPU). A worker thread holds one keep-alive connection and does the request;
// this thread blocks on a shared flag until the reply is posted (Atomics.wait), so the helpers
// keep their synchronous signatures and cost ~1 ms each.
import { readFileSync } from "node:fs";
import path from "node:path";
import {
  MessageChannel,
  receiveMessageOnPort,
  Worker,
  type MessagePort,
} from "node:worker_threads";
import * as yaml from "js-yaml";
import { stackEnv } from "./env.js";

export interface ApiReply {
  status: number;
  body: string;
}

interface Reply extends Partial<ApiReply> {
  id: number;
  error?: string;
}

// CommonJS, evaluated as is: no loader hooks (tsx) in the worker.
const WORKER = `
const { workerData } = require("node:worker_threads");
const https = require("node:https");
const { server, ca, cert, key, flag, port, timeoutMs } = workerData;
const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca, cert, key });
const done = (reply) => {
  port.postMessage(reply);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
};
port.on("message", ({ id, path }) => {
  const req = https.get(new URL(path, server), { agent, headers: { Accept: "application/json" }, timeout: timeoutMs }, (res) => {
    const parts = [];
    res.on("data", (c) => parts.push(c));
    res.on("end", () => done({ id, status: res.statusCode, body: Buffer.concat(parts).toString("utf8") }));
    res.on("error", (err) => done({ id, error: String(err) }));
  });
  req.on("timeout", () => req.destroy(new Error("timed out after " + timeoutMs + " ms")));
  req.on("error", (err) => done({ id, error: String(err) }));
});
`;

const TIMEOUT_MS = 10_000;

let client: { port: MessagePort; flag: Int32Array; seq: number } | undefined;

function start(): NonNullable<typeof client> {
  const file = stackEnv("KUBECONFIG");
  const config = yaml.load(readFileSync(file, "utf8")) as {
    clusters: { cluster: { server: string; "certificate-authority": string } }[];
    users: { user: { "client-certificate": string; "client-key": string } }[];
  };
  const read = (p: string) => readFileSync(path.resolve(path.dirname(file), p), "utf8");
  const { server, "certificate-authority": ca } = config.clusters[0]!.cluster;
  const { "client-certificate": cert, "client-key": key } = config.users[0]!.user;
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: {
      server,
      ca: read(ca),
      cert: read(cert),
      key: read(key),
      flag,
      port: port2,
      timeoutMs: TIMEOUT_MS,
    },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  return { port: port1, flag, seq: 0 };
}

/** GET `apiPath` from the stack's API server; throws when it cannot be reached in time. */
export function apiGetSync(apiPath: string): ApiReply {
  client ??= start();
  const { port, flag } = client;
  const id = ++client.seq;
  Atomics.store(flag, 0, 0);
  port.postMessage({ id, path: apiPath });
  const deadline = Date.now() + TIMEOUT_MS + 1000;
  for (;;) {
    const m = receiveMessageOnPort(port)?.message as Reply | undefined;
    if (m?.id === id) {
      if (m.error !== undefined) throw new Error(`GET ${apiPath}: ${m.error}`);
      return { status: m.status!, body: m.body! };
    }
    if (m) continue; // a reply to an earlier call that gave up waiting
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`GET ${apiPath}: no reply in ${TIMEOUT_MS + 1000} ms`);
    Atomics.wait(flag, 0, 0, left);
    Atomics.store(flag, 0, 0);
  }
}

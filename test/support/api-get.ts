// A synchronous GET against the stack's API server, as the admin kubeconfig's client, for the
// probes that tests run every 250 ms (getVS: most of the e2e runs' ~2,400 kubectl processes,
// each ~0.08 s of CPU). A worker thread (api-get-worker.ts) holds one keep-alive connection and
// does the request; this thread blocks on a shared flag until the reply is posted
// (Atomics.wait), so the helpers keep their synchronous signatures and cost ~3 ms each.
import {
  MessageChannel,
  receiveMessageOnPort,
  Worker,
  type MessagePort,
} from "node:worker_threads";
import { stackEnv } from "./env.js";

export interface ApiReply {
  status: number;
  /** The object, when the status is 200. */
  object?: unknown;
}

interface Reply extends Partial<ApiReply> {
  id: number;
  error?: string;
}

const TIMEOUT_MS = 11_000;

let client: { port: MessagePort; flag: Int32Array; seq: number } | undefined;

function start(): NonNullable<typeof client> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  // The worker inherits this process's --import tsx, and so loads TypeScript as the tests do.
  const worker = new Worker(new URL("./api-get-worker.ts", import.meta.url), {
    workerData: { kubeconfig: stackEnv("KUBECONFIG"), flag, port: port2 },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  const started = { port: port1, flag, seq: 0 };
  // A worker that died (between calls: this thread runs its events then) is replaced on the next.
  worker.once("exit", () => {
    if (client === started) client = undefined;
  });
  return started;
}

/** GET `apiPath` from the stack's API server; throws when it cannot be reached in time. */
export function apiGetSync(apiPath: string): ApiReply {
  client ??= start();
  const { port, flag } = client;
  const id = ++client.seq;
  Atomics.store(flag, 0, 0);
  port.postMessage({ id, path: apiPath });
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const m = receiveMessageOnPort(port)?.message as Reply | undefined;
    if (m?.id === id) {
      if (m.error !== undefined) throw new Error(`GET ${apiPath}: ${m.error}`);
      return { status: m.status!, object: m.object };
    }
    if (m) continue; // a reply to an earlier call that gave up waiting
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`GET ${apiPath}: no reply in ${TIMEOUT_MS} ms`);
    Atomics.wait(flag, 0, 0, left);
    Atomics.store(flag, 0, 0);
  }
}

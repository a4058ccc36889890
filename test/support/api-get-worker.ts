// The worker thread of api-get.ts: the project's own Kubernetes client (src/controller/kube.ts,
// with the stack's kubeconfig read by kubeconfig.ts), asked one GET at a time; each reply is
// posted, then told through the shared flag the asking thread blocks on. A client that cannot be
// made (an unreadable kubeconfig) is an error in every reply, not a dead worker that the asking
// thread would wait out.
import { workerData, type MessagePort } from "node:worker_threads";
import { KubeError, Kube } from "../../src/controller/kube.js";
import { fromFile } from "../../src/controller/kubeconfig.js";

const { kubeconfig, flag, port } = workerData as {
  kubeconfig: string;
  flag: Int32Array;
  port: MessagePort;
};

const client = fromFile(kubeconfig).then((config) => new Kube(config));
client.catch(() => undefined); // reported by each reply

function done(reply: object): void {
  port.postMessage(reply);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}

port.on("message", ({ id, path }: { id: number; path: string }) => {
  client
    .then((kube) => kube.get<unknown>(path))
    .then(
      (object) => done({ id, status: 200, object }),
      (err: unknown) =>
        done(err instanceof KubeError ? { id, status: err.status } : { id, error: String(err) }),
    );
});

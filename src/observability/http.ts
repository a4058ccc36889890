// The small HTTP endpoints: /metrics, /healthz and /readyz.
import http from "node:http";
import type { Metrics } from "./metrics.js";

export type Routes = Record<string, (res: http.ServerResponse) => void | Promise<void>>;

export function serve(routes: Routes, bind: { host?: string; port: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const route = routes[(req.url ?? "/").split("?")[0]!];
    if (req.method !== "GET" || !route) {
      res.writeHead(404).end("not found\n");
      return;
    }
    Promise.resolve(route(res)).catch(() => res.writeHead(500).end("error\n"));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(bind.port, bind.host, () => resolve(server));
  });
}

export function metricsRoutes(metrics: Metrics): Routes {
  return {
    "/metrics": async (res) => {
      res.writeHead(200, { "Content-Type": metrics.registry.contentType });
      res.end(await metrics.registry.metrics());
    },
  };
}

export function healthRoutes(ready: () => boolean): Routes {
  return {
    "/healthz": (res) => void res.writeHead(200).end("ok\n"),
    "/readyz": (res) =>
      void (ready()
        ? res.writeHead(200).end("ok\n")
        : res.writeHead(503).end("caches not synced\n")),
  };
}

export function closeServer(server: http.Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

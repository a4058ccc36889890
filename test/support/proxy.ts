// Outages for one test's operators only: a TCP proxy in front of a shared service (the API server,
// the broker) and a UDP forwarder in front of the stack's dnsmasq, each owned by the test. The
// shared services stay up for everyone else; the operators see them through these, which can
// refuse connections (a stopped service), stall them (a SIGSTOPped one: accepted, never answered)
// or stop answering DNS.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

export type ProxyState = "up" | "refusing" | "stalled";

interface Pair {
  client: Socket;
  upstream?: Socket;
}

/**
 * Forwards 127.0.0.1:port to the first backend port that accepts (`backends` is read at each
 * connection, so a restarted backend on a new port is found).
 */
export class TcpProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<Pair>();
  private held: Socket[] = [];
  state: ProxyState = "up";
  port = 0;
  /** Connections made while set carry requests, never their replies (answers lost on the way). */
  holdNewReplies = false;
  /** Connections accepted so far: a request sent again on a new connection shows here. */
  connections = 0;

  constructor(private readonly backends: () => number[]) {}

  async start(port = 0): Promise<this> {
    const server = createServer((client) => this.accept(client));
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    this.server = server;
    this.port = (server.address() as { port: number }).port;
    return this;
  }

  /** A stopped service: every connection reset, new ones refused. */
  async refuse(): Promise<void> {
    this.state = "refusing";
    const server = this.server;
    this.server = undefined;
    for (const p of this.pairs) this.drop(p);
    for (const c of this.held) c.destroy();
    this.held = [];
    if (server) await new Promise((r) => server.close(r));
  }

  /** A stopped process: connections stay open and new ones are accepted, but no byte moves. */
  stall(): void {
    this.state = "stalled";
    for (const { client, upstream } of this.pairs) {
      if (!upstream) continue;
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /**
   * Requests still go through, replies of the connections open now do not (a peer that got the
   * request and whose answer is lost): what a client sent arrives, nothing comes back.
   */
  holdReplies(): void {
    for (const { client, upstream } of this.pairs) {
      if (!upstream) continue;
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  /**
   * The connections open now are reset (TCP RST) when their client next sends: a server or load
   * balancer that dropped an idle keep-alive connection just as the client reused it. What the
   * client sent never reaches the backend.
   */
  resetOnNextSend(): void {
    for (const pair of this.pairs) {
      const { client, upstream } = pair;
      if (!upstream) continue;
      client.unpipe(upstream);
      client.once("data", () => {
        client.resetAndDestroy();
        this.drop(pair);
      });
      client.resume(); // unpipe paused it
    }
  }

  /** Back: a refusing proxy listens again on its port; a stalled one lets the bytes through. */
  async resume(): Promise<void> {
    const was = this.state;
    this.state = "up";
    if (was === "refusing") await this.start(this.port);
    if (was !== "stalled") return;
    for (const { client, upstream } of this.pairs) {
      if (!upstream) continue;
      client.pipe(upstream);
      upstream.pipe(client);
    }
    const held = this.held;
    this.held = [];
    for (const c of held) this.forward(c);
  }

  async close(): Promise<void> {
    await this.refuse();
  }

  private accept(client: Socket): void {
    this.connections++;
    client.on("error", () => undefined);
    if (this.state === "stalled") {
      client.pause();
      this.held.push(client);
      client.once("close", () => (this.held = this.held.filter((c) => c !== client)));
      return;
    }
    this.forward(client);
  }

  private forward(client: Socket, tried = 0): void {
    if (client.destroyed) return;
    const ports = this.backends();
    const port = ports[tried];
    if (port === undefined) {
      client.destroy();
      return;
    }
    const pair: Pair = { client };
    this.pairs.add(pair);
    const upstream = connect(port, "127.0.0.1");
    pair.upstream = upstream;
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      if (this.state === "stalled") {
        client.pause();
        upstream.pause();
        return;
      }
      client.pipe(upstream);
      if (this.holdNewReplies) upstream.pause();
      else upstream.pipe(client);
    });
    upstream.on("error", () => {
      if (connected) return;
      // Not listening: the next backend, if any.
      this.pairs.delete(pair);
      this.forward(client, tried + 1);
    });
    upstream.on("close", () => {
      if (!connected) return;
      this.drop(pair);
    });
    client.on("close", () => this.drop(pair));
  }

  private drop(pair: Pair): void {
    this.pairs.delete(pair);
    pair.client.destroy();
    pair.upstream?.destroy();
  }
}

/** The same URL through another local port (a TcpProxy in front of its service). */
export function throughPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/** Forwards DNS queries over UDP to the stack's dnsmasq, or drops them all while `dropping`. */
export class DnsForwarder {
  private socket: UdpSocket | undefined;
  dropping = false;
  port = 0;

  constructor(private readonly upstream: { host: string; port: number }) {}

  async start(): Promise<this> {
    const socket = createSocket("udp4");
    socket.on("message", (msg, from) => this.relay(msg, from));
    socket.bind(0, "127.0.0.1");
    await once(socket, "listening");
    this.socket = socket;
    this.port = socket.address().port;
    return this;
  }

  private relay(msg: Buffer, from: RemoteInfo): void {
    if (this.dropping) return;
    const out = createSocket("udp4");
    const done = () => {
      clearTimeout(timer);
      out.close();
    };
    const timer = setTimeout(done, 5000);
    out.on("error", done);
    out.once("message", (answer) => {
      this.socket?.send(answer, from.port, from.address);
      done();
    });
    out.send(msg, this.upstream.port, this.upstream.host);
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

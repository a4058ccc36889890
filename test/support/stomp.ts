// A minimal STOMP 1.2 subscriber, enough to watch what reaches RabbitMQ's STOMP adapter.
import net from "node:net";

export interface StompSubscription {
  next(timeoutMs: number): Promise<string>;
  close(): void;
}

export async function stompSubscribe(
  port: number,
  destination: string,
  login = "guest",
  passcode = "guest",
): Promise<StompSubscription> {
  const sock = net.connect(port, "127.0.0.1");
  let buf = "";
  const frames: string[] = [];
  const waiters: ((f: string) => void)[] = [];
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf("\0")) >= 0) {
      const frame = buf.slice(0, i).replace(/^\n+/, "");
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(frame);
      else frames.push(frame);
    }
  });
  const next = (timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const f = frames.shift();
      if (f !== undefined) return resolve(f);
      const t = setTimeout(
        () => reject(new Error(`no STOMP frame within ${timeoutMs}ms`)),
        timeoutMs,
      );
      waiters.push((frame) => {
        clearTimeout(t);
        resolve(frame);
      });
    });
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  sock.write(`CONNECT\naccept-version:1.2\nhost:/\nlogin:${login}\npasscode:${passcode}\n\n\0`);
  const connected = await next(5000);
  if (!connected.startsWith("CONNECTED")) throw new Error(`STOMP refused: ${connected}`);
  sock.write(`SUBSCRIBE\nid:0\ndestination:${destination}\nreceipt:sub-0\n\n\0`);
  const receipt = await next(5000);
  if (!receipt.startsWith("RECEIPT")) throw new Error(`STOMP SUBSCRIBE failed: ${receipt}`);
  return { next, close: () => sock.destroy() };
}

// Ranged datastore reads (the installer image check): a Range request for just the bytes asked,
// a capped streamed read from a server that ignores Range (cut off, never read to the end, also
// when the body never ends), typed answers for a missing file, a file that ends early and a
// failing server, and the reconcile's signal ending a read that hangs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { runWithSignal } from "../../src/abort.js";
import {
  DatastoreFileNotFound,
  DatastoreReadFailed,
  READ_STREAM_CAP,
  readFileRange,
} from "../../src/vsphere/datastore.js";
import { VSphereUnreachable } from "../../src/vsphere/errors.js";
import type { VSphereSession } from "../../src/vsphere/session.js";

const FILE = Buffer.from(Array.from({ length: 100 * 1024 }, (_, i) => (i * 7) & 0xff));
const TARGET = { datacenter: "DC0", datastore: "LocalDS_0", path: "isos/vendor.iso" };

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const seen: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    seen.push(req);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const session = {
    soap: { options: { url: `http://127.0.0.1:${port}/sdk` }, sessionCookie: "c00kie" },
    invoke: async () => undefined,
  } as unknown as VSphereSession;
  return {
    session,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** An honest server: 206 with the range asked for. */
function ranged(req: IncomingMessage, res: ServerResponse) {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
  const start = Number(m?.[1]);
  if (!m || start >= FILE.length) {
    res.writeHead(416).end();
    return;
  }
  const end = Math.min(Number(m[2]), FILE.length - 1);
  res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${FILE.length}` });
  res.end(FILE.subarray(start, end + 1));
}

test("a Range request for the bytes asked, with the session cookie; a short file gives fewer", async (t) => {
  const s = await serve(ranged);
  t.after(s.close);
  const got = await readFileRange(s.session, TARGET, 17 * 2048, 2048);
  assert.deepEqual(got, FILE.subarray(34816, 36864));
  const req = s.seen[0]!;
  assert.equal(req.headers.range, "bytes=34816-36863");
  assert.equal(req.headers.cookie, "vmware_soap_session=c00kie");
  assert.equal(req.url, "/folder/isos/vendor.iso?dcPath=DC0&dsName=LocalDS_0");
  // The file ends inside the range, or before it (416).
  assert.equal((await readFileRange(s.session, TARGET, FILE.length - 100, 2048)).length, 100);
  assert.equal((await readFileRange(s.session, TARGET, FILE.length + 4096, 2048)).length, 0);
});

test("a 206 with more than asked is cut at the length asked", async (t) => {
  const s = await serve((_req, res) => {
    res.writeHead(206);
    res.end(FILE);
  });
  t.after(s.close);
  assert.deepEqual(await readFileRange(s.session, TARGET, 0, 2048), FILE.subarray(0, 2048));
});

test("a server that ignores Range: the stream is read up to the bytes asked and cut off", async (t) => {
  let written = 0;
  let closed = false;
  // An endless body: only a read that stops on its own returns.
  const s = await serve((_req, res) => {
    res.writeHead(200);
    res.on("close", () => (closed = true));
    const chunk = Buffer.alloc(16 * 1024);
    const pump = () => {
      while (!res.destroyed) {
        const base = written;
        for (let i = 0; i < chunk.length; i++) chunk[i] = ((base + i) * 7) & 0xff;
        written += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
    };
    pump();
  });
  t.after(s.close);
  const got = await readFileRange(s.session, TARGET, 20 * 2048, 2048);
  assert.deepEqual(got, FILE.subarray(40960, 43008));
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(closed, "the connection is closed once the bytes are in");
  assert.ok(written < READ_STREAM_CAP * 4, `not read on: ${written} bytes written`);
  // Beyond the cap it is not even tried.
  await assert.rejects(
    readFileRange(s.session, TARGET, READ_STREAM_CAP, 2048),
    (e: unknown) => e instanceof DatastoreReadFailed && /ignores Range/.test(e.message),
  );
});

test("404 → DatastoreFileNotFound; 500 → DatastoreReadFailed; bad arguments are refused", async (t) => {
  let status = 404;
  const s = await serve((_req, res) => res.writeHead(status).end("no"));
  t.after(s.close);
  await assert.rejects(
    readFileRange(s.session, TARGET, 0, 2048),
    (e: unknown) =>
      e instanceof DatastoreFileNotFound && e.message.includes("[LocalDS_0] isos/vendor.iso"),
  );
  status = 500;
  await assert.rejects(
    readFileRange(s.session, TARGET, 0, 2048),
    (e: unknown) => e instanceof DatastoreReadFailed && e.status === 500,
  );
  await assert.rejects(readFileRange(s.session, TARGET, -1, 2048), /invalid datastore read/);
  await assert.rejects(readFileRange(s.session, TARGET, 0, 1024 * 1024), /invalid datastore read/);
  await assert.rejects(
    readFileRange(s.session, { ...TARGET, path: "../etc/passwd" }, 0, 2048),
    /invalid datastore file path/,
  );
});

test("a server that never answers: the reconcile's signal ends the read", async (t) => {
  const s = await serve(() => undefined);
  t.after(s.close);
  const started = Date.now();
  await assert.rejects(
    runWithSignal(AbortSignal.timeout(200), () => readFileRange(s.session, TARGET, 0, 2048)),
    VSphereUnreachable,
  );
  assert.ok(Date.now() - started < 5_000);
});

// Datastore files: upload and ranged reads through the /folder HTTP interface with the SOAP
// session cookie and the same TLS settings as SOAP; delete through
// FileManager.DeleteDatastoreFile_Task.
import type { Readable } from "node:stream";
import axios, { type AxiosError } from "axios";
import { currentSignal } from "../abort.js";
import type { VSphereSession } from "./session.js";
import { MoRef } from "./xml.js";
import { VSphereUnreachable } from "./errors.js";

/** The datastore refused or failed an upload (HTTP status, 0 when there was no response). */
export class DatastoreUploadFailed extends Error {
  override name = "DatastoreUploadFailed";
  constructor(
    readonly status: number,
    readonly datastore: string,
    readonly path: string,
    detail = "",
  ) {
    super(`upload of [${datastore}] ${path} failed: HTTP ${status}${detail ? `: ${detail}` : ""}`);
  }
}

/** A datastore file vsop reads does not exist (HTTP 404). */
export class DatastoreFileNotFound extends Error {
  override name = "DatastoreFileNotFound";
  constructor(
    readonly datastore: string,
    readonly path: string,
  ) {
    super(`[${datastore}] ${path} does not exist`);
  }
}

/** The datastore refused or failed a read (HTTP status), or could not serve just a part of it. */
export class DatastoreReadFailed extends Error {
  override name = "DatastoreReadFailed";
  constructor(
    readonly status: number,
    readonly datastore: string,
    readonly path: string,
    detail = "",
  ) {
    super(`read of [${datastore}] ${path} failed: HTTP ${status}${detail ? `: ${detail}` : ""}`);
  }
}

/** "[LocalDS_0] vsop/x.iso" */
export function datastorePath(datastore: string, path: string): string {
  return `[${datastore}] ${path}`;
}

/** "[LocalDS_0] isos/x.iso" → { datastore: "LocalDS_0", path: "isos/x.iso" }; undefined if not one. */
export function parseDatastorePath(p: string): { datastore: string; path: string } | undefined {
  const m = /^\[([^\]]+)\] ?(.+)$/.exec(p);
  return m ? { datastore: m[1]!, path: m[2]! } : undefined;
}

/** Refuses paths that could leave the datastore. */
export function checkFilePath(path: string): string {
  const clean = path.replace(/^\/+/, "");
  if (!clean || clean.split("/").some((s) => s === ".." || s === "."))
    throw new Error(`invalid datastore file path "${path}"`);
  return clean;
}

/** https://host/folder/<path>?dcPath=<dc>&dsName=<ds> on the vCenter of `sdkUrl`. */
export function folderUrl(sdkUrl: string, datacenter: string, datastore: string, path: string) {
  const { origin } = new URL(sdkUrl);
  const encoded = checkFilePath(path).split("/").map(encodeURIComponent).join("/");
  const query = new URLSearchParams({ dcPath: datacenter, dsName: datastore });
  return `${origin}/folder/${encoded}?${query.toString()}`;
}

const SERVICE_INSTANCE = new MoRef("ServiceInstance", "ServiceInstance");

/**
 * One request on the /folder interface with the SOAP session's cookie. A cheap call first makes
 * sure the session (and so the cookie) is alive, logging in if needed; an expired cookie (401,
 * 403) is refreshed once and the request sent again (`discard` frees the refused response). A
 * transport error is VSphereUnreachable; every other answer is the caller's.
 */
async function withSessionCookie<R extends { status: number }>(
  session: VSphereSession,
  url: string,
  count: () => void,
  send: (cookie: string) => Promise<R>,
  discard: (res: R) => void = () => undefined,
): Promise<R> {
  for (let attempt = 0; ; attempt++) {
    if (!session.soap.sessionCookie || attempt > 0)
      await session.invoke("CurrentTime", SERVICE_INSTANCE);
    count();
    let res: R;
    try {
      res = await send(`vmware_soap_session=${session.soap.sessionCookie ?? ""}`);
    } catch (err) {
      const code = (err as AxiosError).code ?? "unknown";
      throw new VSphereUnreachable(url.replace(/\?.*/, ""), code);
    }
    if ((res.status === 401 || res.status === 403) && attempt === 0) {
      discard(res);
      continue;
    }
    return res;
  }
}

export async function uploadFile(
  session: VSphereSession,
  target: { datacenter: string; datastore: string; path: string },
  data: Buffer,
  onCall?: (method: string) => void,
): Promise<void> {
  const url = folderUrl(session.soap.options.url, target.datacenter, target.datastore, target.path);
  const { status } = await withSessionCookie(
    session,
    url,
    () => onCall?.("DatastoreFileUpload"),
    (cookie) =>
      axios.put(url, data, {
        signal: currentSignal(),
        httpsAgent: session.soap.agent,
        headers: { "Content-Type": "application/octet-stream", Cookie: cookie },
        timeout: session.soap.options.timeoutMs ?? 300_000,
        maxBodyLength: Infinity,
        maxContentLength: Infinity,
        maxRedirects: 0,
        validateStatus: () => true,
        responseType: "text",
      }),
  );
  if (status === 200 || status === 201 || status === 204) return;
  throw new DatastoreUploadFailed(status, target.datastore, target.path);
}

/** The most a read streams when the server ignores Range and answers with the whole file. */
export const READ_STREAM_CAP = 1024 * 1024;
/** Longest part of a file one read returns. */
export const READ_MAX = 64 * 1024;
const READ_TIMEOUT_MS = 30_000;

/**
 * Reads `length` bytes at `offset` of a datastore file with an HTTP Range request: never the
 * whole file. Fewer bytes (none) come back when the file ends first. A server that ignores Range
 * is read as a stream up to the bytes asked for, at most READ_STREAM_CAP, then cut off.
 * DatastoreFileNotFound for a missing file.
 */
export async function readFileRange(
  session: VSphereSession,
  target: { datacenter: string; datastore: string; path: string },
  offset: number,
  length: number,
  onCall?: (method: string) => void,
): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || !(length > 0 && length <= READ_MAX))
    throw new Error(`invalid datastore read: ${length} bytes at ${offset}`);
  const url = folderUrl(session.soap.options.url, target.datacenter, target.datastore, target.path);
  const fail = (status: number, detail = "") =>
    new DatastoreReadFailed(status, target.datastore, target.path, detail);
  const end = offset + length;
  const res = await withSessionCookie(
    session,
    url,
    () => onCall?.("DatastoreFileRead"),
    (cookie) => {
      const timeout = AbortSignal.timeout(READ_TIMEOUT_MS);
      const outer = currentSignal();
      return axios.get<Readable>(url, {
        signal: outer ? AbortSignal.any([outer, timeout]) : timeout,
        httpsAgent: session.soap.agent,
        headers: { Range: `bytes=${offset}-${end - 1}`, Cookie: cookie },
        timeout: READ_TIMEOUT_MS,
        maxRedirects: 0,
        validateStatus: () => true,
        responseType: "stream",
        decompress: false,
      });
    },
    (refused) => refused.data.destroy(),
  );
  const body = res.data;
  const status = res.status;
  if (status === 206) return await readCapped(body, 0, length, url);
  if (status === 200) {
    if (end > READ_STREAM_CAP) {
      body.destroy();
      throw fail(
        200,
        `the server ignores Range requests and byte ${end} lies beyond ${READ_STREAM_CAP}`,
      );
    }
    return await readCapped(body, offset, length, url);
  }
  body.destroy();
  // Range Not Satisfiable: the file ends before `offset`.
  if (status === 416) return Buffer.alloc(0);
  if (status === 404) throw new DatastoreFileNotFound(target.datastore, target.path);
  throw fail(status);
}

/** Bytes [skip, skip+length) of a stream, which is destroyed as soon as they are in. */
async function readCapped(
  body: Readable,
  skip: number,
  length: number,
  url: string,
): Promise<Buffer> {
  const out = Buffer.alloc(length);
  let seen = 0;
  let got = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const from = Math.max(0, skip - seen);
      seen += chunk.length;
      if (from >= chunk.length) continue;
      got += chunk.copy(out, got, from, Math.min(chunk.length, from + length - got));
      if (got >= length) break;
    }
  } catch (err) {
    const code = (err as AxiosError).code ?? (err as Error).name ?? "unknown";
    throw new VSphereUnreachable(url.replace(/\?.*/, ""), code);
  } finally {
    body.destroy();
  }
  return out.subarray(0, got);
}

/** Starts deleting a datastore file or directory; returns the task (FileNotFound: already gone). */
export async function startDeleteFile(
  session: VSphereSession,
  datacenter: MoRef,
  datastore: string,
  path: string,
): Promise<string> {
  const fileManager = (await session.serviceContent()).fileManager;
  if (!fileManager) throw new Error("this vCenter has no FileManager");
  const name = datastorePath(datastore, checkFilePath(path));
  const task = (await session.invoke("DeleteDatastoreFile_Task", fileManager, {
    name,
    datacenter,
  })) as MoRef;
  return task.value;
}

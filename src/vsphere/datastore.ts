// Datastore files: upload through the /folder HTTP interface with the SOAP session cookie and
// the same TLS settings as SOAP; delete through FileManager.DeleteDatastoreFile_Task.
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

/** "[LocalDS_0] vsop/x.iso" */
export function datastorePath(datastore: string, path: string): string {
  return `[${datastore}] ${path}`;
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

export async function uploadFile(
  session: VSphereSession,
  target: { datacenter: string; datastore: string; path: string },
  data: Buffer,
  onCall?: (method: string) => void,
): Promise<void> {
  const url = folderUrl(session.soap.options.url, target.datacenter, target.datastore, target.path);
  const fail = (status: number, detail = "") =>
    new DatastoreUploadFailed(status, target.datastore, target.path, detail);
  for (let attempt = 0; ; attempt++) {
    // A cheap call makes sure the session (and so the cookie) is alive, logging in if needed.
    if (!session.soap.sessionCookie || attempt > 0)
      await session.invoke("CurrentTime", SERVICE_INSTANCE);
    onCall?.("DatastoreFileUpload");
    let status: number;
    try {
      const res = await axios.put(url, data, {
        signal: currentSignal(),
        httpsAgent: session.soap.agent,
        headers: {
          "Content-Type": "application/octet-stream",
          Cookie: `vmware_soap_session=${session.soap.sessionCookie ?? ""}`,
        },
        timeout: session.soap.options.timeoutMs ?? 300_000,
        maxBodyLength: Infinity,
        maxContentLength: Infinity,
        maxRedirects: 0,
        validateStatus: () => true,
        responseType: "text",
      });
      status = res.status;
    } catch (err) {
      const code = (err as AxiosError).code ?? "unknown";
      throw new VSphereUnreachable(url.replace(/\?.*/, ""), code);
    }
    if (status === 200 || status === 201 || status === 204) return;
    // An expired cookie: refresh the session once and try again.
    if ((status === 401 || status === 403) && attempt === 0) continue;
    throw fail(status);
  }
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

// cloud-init's VMware datasource reads its input from VM extraConfig ("guestinfo.*" keys).
// The network config has no key of its own there: it rides inside the metadata as `network`,
// with `network.encoding` saying how it is encoded (DataSourceVMware.process_metadata).
import { load } from "js-yaml";
import type { CloudInitFiles } from "./render.js";

export const GUESTINFO_METADATA = "guestinfo.metadata";
export const GUESTINFO_USERDATA = "guestinfo.userdata";
/** Every key guestinfoExtraConfig sets, so a caller can clear them after the install. */
export const GUESTINFO_KEYS = [
  GUESTINFO_METADATA,
  `${GUESTINFO_METADATA}.encoding`,
  GUESTINFO_USERDATA,
  `${GUESTINFO_USERDATA}.encoding`,
] as const;

export class GuestinfoError extends Error {
  override name = "GuestinfoError";
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

/** extraConfig entries carrying user-data, meta-data and network config (all base64). */
export function guestinfoExtraConfig(files: CloudInitFiles): Record<string, string> {
  let meta: unknown;
  try {
    meta = load(files.metaData);
  } catch (err) {
    throw new GuestinfoError(`meta-data is not valid YAML: ${(err as Error).message}`);
  }
  if (meta === null || typeof meta !== "object" || Array.isArray(meta))
    throw new GuestinfoError("meta-data is not a mapping");
  // JSON is what the datasource tries first; it also keeps the nested YAML out of quoting trouble.
  const metadata = JSON.stringify({
    ...(meta as Record<string, unknown>),
    network: b64(files.networkConfig),
    "network.encoding": "base64",
  });
  return {
    [GUESTINFO_METADATA]: b64(metadata),
    [`${GUESTINFO_METADATA}.encoding`]: "base64",
    [GUESTINFO_USERDATA]: b64(files.userData),
    [`${GUESTINFO_USERDATA}.encoding`]: "base64",
  };
}

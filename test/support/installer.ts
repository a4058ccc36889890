// The booted guest, played by test code: it reads what a real installer would read (the
// kickstart over HTTP, the ISO from the datastore, guestinfo from the VM) and signals completion
// the way a real installed system would. Nothing in src/ knows about it.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { nodeDown, nodeUp, OPERATOR_NS, tryGetJSON, waitFor } from "./harness.js";
import { extraConfig, findVMs, govc } from "./govc.js";
import { parseDatastorePath } from "../../src/vsphere/datastore.js";

/**
 * One HTTP call on its own connection, as curl in a real installer makes it. A pooled keep-alive
 * connection (fetch's) can be closed by the server's idle timeout just as a request goes out, and
 * a resend of a one-time call then meets its own spent token (410). Gives up after `timeoutMs`
 * (15 s by default): a killed operator may never answer.
 */
function call(
  url: string,
  method: "GET" | "POST",
  timeoutMs = 15_000,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, timeout: timeoutMs, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
      );
      res.on("error", reject);
    });
    req.on("timeout", () =>
      req.destroy(new Error(`${method} ${url}: no answer in ${timeoutMs / 1000} s`)),
    );
    req.on("error", reject);
    req.end();
  });
}

/** The install token of a server, as its Boot-VLAN PXE config would carry it. */
export function installToken(uid: string): string {
  return installRecord(uid).token!;
}

/** The server's install record (vsop-install-<uid> in vsop-system), its fields decoded. */
export function installRecord(uid: string): Record<string, string | undefined> {
  const r = readInstallRecord(uid);
  if (!r) throw new Error(`no install record for ${uid}`);
  return r.fields;
}

/** The install record with its resourceVersion; undefined when there is none. */
export function readInstallRecord(
  uid: string,
): { resourceVersion: string; fields: Record<string, string> } | undefined {
  const s = tryGetJSON<{ metadata: { resourceVersion: string }; data?: Record<string, string> }>([
    "-n",
    OPERATOR_NS,
    "get",
    "secret",
    `vsop-install-${uid}`,
  ]);
  if (!s) return undefined;
  const fields = Object.fromEntries(
    Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );
  return { resourceVersion: s.metadata.resourceVersion, fields };
}

export async function fetchKickstart(
  port: number,
  token: string,
): Promise<{ status: number; body: string }> {
  return call(`http://127.0.0.1:${port}/ks/${token}`, "GET");
}

export async function callBuilt(url: string, timeoutMs?: number): Promise<number> {
  return (await call(url, "POST", timeoutMs)).status;
}

/**
 * Downloads the server's boot ISO from the datastore (of another vCenter with `env`'s GOVC_*):
 * its volume id, and the NoCloud files (cidata) or the kickstart ks.cfg (OEMDRV) it carries.
 */
export function readIsoFromDatastore(
  dsPath: string,
  env: Record<string, string> = {},
): Record<string, string> {
  const where = parseDatastorePath(dsPath);
  if (!where) throw new Error(`not a datastore path: ${dsPath}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-iso-"));
  try {
    const iso = path.join(dir, "boot.iso");
    govc(["datastore.download", "-ds", where.datastore, where.path, iso], env, 30_000);
    const out = path.join(dir, "files");
    execFileSync("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/", out], {
      stdio: "ignore",
    });
    const volid = execFileSync("xorriso", ["-indev", iso, "-pvd_info"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    const files: Record<string, string> = {
      ".volume-id": /Volume Id\s*:\s*(\S+)/.exec(volid)?.[1] ?? "",
    };
    for (const f of ["user-data", "meta-data", "network-config", "ks.cfg"])
      if (existsSync(path.join(out, f))) files[f] = readFileSync(path.join(out, f), "utf8");
    return files;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** cloud-init data that the VMware datasource would read from the VM's guestinfo. */
export function readGuestinfo(
  vmName: string,
  env: Record<string, string> = {},
): {
  userData: string;
  metadata: Record<string, string>;
} {
  const vm = findVMs(vmName, env)[0]!;
  const ec = extraConfig(vm);
  const dec = (v?: string) => Buffer.from(v ?? "", "base64").toString("utf8");
  return {
    userData: dec(ec["guestinfo.userdata"]),
    metadata: JSON.parse(dec(ec["guestinfo.metadata"]) || "{}") as Record<string, string>,
  };
}

/** The completion callback URL a cloud-init user-data carries. */
export function builtURLIn(userData: string): string {
  const m = /(https?:\/\/[^\s'"]+\/built\/[A-Za-z0-9_-]+)/.exec(userData);
  if (!m) throw new Error("no /built/ URL in user-data");
  return m[1]!;
}

/** The one-time key bundle URL an install file (kickstart or user-data) carries. */
export function bootstrapURLIn(text: string): string {
  const m = /(https?:\/\/[^\s'"]+\/bootstrap\/[A-Za-z0-9_-]+)/.exec(text);
  if (!m) throw new Error("no /bootstrap/ URL in the install file");
  return m[1]!;
}

/** A nonce as the shipped templates make one for an install (128 random bits, hex). */
export function newInstallerNonce(): string {
  return randomBytes(16).toString("hex");
}

/**
 * POSTs the bootstrap URL as the installing system does; with `nonce`, as the shipped templates
 * do (the same one on every try of one install).
 */
export async function fetchBootstrap(
  url: string,
  opts: { timeoutMs?: number; nonce?: string } = {},
): Promise<{ status: number; body: string }> {
  const headers: Record<string, string> = opts.nonce
    ? { "X-Vsop-Installer-Nonce": opts.nonce }
    : {};
  return call(url, "POST", opts.timeoutMs, headers);
}

/** The files a bootstrap script writes, by path, read from its quoted here-documents. */
export function bootstrapFiles(script: string): Record<string, string> {
  const files: Record<string, string> = {};
  const re = /^cat > (\S+) <<'VSOP_EOF'\n([\s\S]*?)^VSOP_EOF$/gm;
  for (let m = re.exec(script); m; m = re.exec(script)) files[m[1]!] = m[2]!;
  return files;
}

export const IDENTITY_KEY_PATH = "/etc/mcollective/vsop/identity.pem";

/**
 * Plays the installed system: fetches its keys once from the bootstrap URL and (re)starts its
 * mcollectived with the identity key it got. Returns the bootstrap's files.
 */
export const CSR_ATTRIBUTES_PATH = "/etc/puppetlabs/puppet/csr_attributes.yaml";

/**
 * `master`: the installed system's Puppet runs are `puppet agent` against the stack's master,
 * with the csr_attributes.yaml the bootstrap wrote (its one-time challenge and trusted facts).
 */
export async function installNode(
  fqdn: string,
  bootstrapURL: string,
  manifest = "default.pp",
  opts: { master?: boolean; beforeStart?: () => Promise<void> } = {},
): Promise<Record<string, string>> {
  // 503 until vsop recorded the power-on; a real installer retries too, with its nonce.
  const nonce = newInstallerNonce();
  const res = await waitFor("the bootstrap to answer", async () => {
    const r = await fetchBootstrap(bootstrapURL, { nonce });
    return r.status === 503 ? undefined : r;
  });
  if (res.status !== 200) throw new Error(`bootstrap answered ${res.status}: ${res.body}`);
  const files = bootstrapFiles(res.body);
  const key = files[IDENTITY_KEY_PATH];
  if (!key) throw new Error("the bootstrap carries no identity key");
  const dir = mkdtempSync(path.join(os.tmpdir(), "vsop-node-"));
  try {
    writeFileSync(path.join(dir, "identity.pem"), key, { mode: 0o600 });
    let csrAttributes: string | undefined;
    if (opts.master) {
      const attrs = files[CSR_ATTRIBUTES_PATH];
      if (!attrs) throw new Error("the bootstrap carries no csr_attributes.yaml");
      csrAttributes = path.join(dir, "csr_attributes.yaml");
      writeFileSync(csrAttributes, attrs, { mode: 0o600 });
    }
    // What the installer does before the installed system boots (a kickstart's %post calling
    // /built): once its mcollectived answers, vsop may find it installed first.
    await opts.beforeStart?.();
    nodeDown(fqdn);
    nodeUp(fqdn, manifest, path.join(dir, "identity.pem"), { master: opts.master, csrAttributes });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return files;
}

/** installNode for a guestinfo server: waits for its cloud-init data, then installs from it. */
export async function installFromGuestinfo(
  vmName: string,
  fqdn: string,
  manifest = "default.pp",
  opts: { master?: boolean } = {},
): Promise<Record<string, string>> {
  const url = await waitFor(`the bootstrap URL in ${vmName}'s guestinfo`, () => {
    try {
      return bootstrapURLIn(readGuestinfo(vmName).userData);
    } catch {
      return undefined;
    }
  });
  return installNode(fqdn, url, manifest, opts);
}

// What every boot method needs to hand a server its install data: the clients, the one-time
// token's URLs, and the rendered files (checked to render before anything is powered on).
import { bootMethod } from "../../api/defaults.js";
import type { CloudInitFiles } from "../../provision/render.js";
import type { VMRecord } from "../../vsphere/vcenter.js";
import type { ReconcileContext } from "../engine/context.js";
import { bootstrapFor, cloudInitFor, kickstartFor, type InstallURLs } from "./install-config.js";
import type { InstallToken, InstallTokens } from "../clients/install-tokens.js";
import type { ConfigReader } from "../clients/secrets.js";
import type { VSpherePool, VSpherePort } from "../engine/ports.js";

export interface InstallDeps {
  pool: VSpherePool;
  tokens: InstallTokens;
  config: ConfigReader;
  /** Base URL installers reach the provisioning server at. */
  provisioningURL: string;
  tmpDir?: string;
  /** Answers whether the server's mcollectived is up (any boot method's "installed" signal). */
  discover?: (ctx: ReconcileContext) => Promise<boolean>;
  /**
   * Called before a fresh install replaces the install record of an earlier one (the VM was
   * recreated): cleans what that install left outside vSphere (its Puppet certificate).
   */
  beforeReinstall?: (ctx: ReconcileContext, previous: InstallToken) => Promise<void>;
  /** Called once when Installed turns True, with power-on to installed in seconds (metrics). */
  onInstalled?: (method: string, seconds: number) => void;
}

/** One server's VM during a reconcile, with what its boot method works with. */
export interface BootContext {
  ctx: ReconcileContext;
  deps: InstallDeps;
  vc: VSpherePort;
  vm: VMRecord;
}

/** Where a server's installer finds its kickstart, its one-time keys and its callback. */
export const installURLs = (base: string, token: string): InstallURLs => ({
  kickstartURL: `${base}/ks/${token}`,
  bootstrapURL: `${base}/bootstrap/${token}`,
  builtURL: `${base}/built/${token}`,
});

/** The object as templates see it: with the status this reconcile computed (address, MACs). */
export const renderView = (ctx: ReconcileContext) => ({ ...ctx.vs, status: ctx.status });

/** A placeholder identity key: only to prove the bundle renders; never leaves this process. */
const CHECK_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
const CHECK_CHALLENGE = "0".repeat(64);

/** Renders the server's install files once, so a broken template is an error before power-on. */
export async function checkInstallFiles(
  deps: InstallDeps,
  ctx: ReconcileContext,
  token: string,
): Promise<void> {
  const vs = renderView(ctx);
  const urls = installURLs(deps.provisioningURL, token);
  if (bootMethod(ctx.cls.spec) === "network") await kickstartFor(vs, ctx.cls, deps.config, urls);
  await bootstrapFor(vs, ctx.cls, deps.config, {
    identityPrivateKeyPem: CHECK_KEY,
    challenge: CHECK_CHALLENGE,
  });
}

/** A server's install file(s) with its token's URLs, after checking its bundle renders. */
async function tokened<T>(
  deps: InstallDeps,
  ctx: ReconcileContext,
  render: (...args: Parameters<typeof kickstartFor>) => Promise<T>,
): Promise<T> {
  const token = await deps.tokens.ensure(ctx.vs);
  await checkInstallFiles(deps, ctx, token.token);
  return render(
    renderView(ctx),
    ctx.cls,
    deps.config,
    installURLs(deps.provisioningURL, token.token),
  );
}

/** The server's kickstart with its token's URLs. */
export const tokenedKickstart = (deps: InstallDeps, ctx: ReconcileContext): Promise<string> =>
  tokened(deps, ctx, kickstartFor);

/** The server's cloud-init files with its token's URLs. */
export const tokenedCloudInit = (
  deps: InstallDeps,
  ctx: ReconcileContext,
): Promise<CloudInitFiles> => tokened(deps, ctx, cloudInitFor);

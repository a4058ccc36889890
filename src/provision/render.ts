// Renders the install files of one server from InstallVariables and (default or class) templates.
import { compileTemplate, TemplateError } from "./template.js";
import { validateInstallVariables, type InstallVariables, type NicMatch } from "./variables.js";
import * as defaults from "./defaults.js";
import { assertNoDefaultRoute } from "./network-config.js";

export interface KickstartTemplates {
  kickstart: string;
  mcollectiveServerCfg: string;
  puppetConf: string;
}

export interface CloudInitTemplates {
  userData: string;
  metaData: string;
  networkConfig: string;
  mcollectiveServerCfg: string;
  puppetConf: string;
}

export interface CloudInitFiles {
  userData: string;
  metaData: string;
  networkConfig: string;
}

/** The files of a NoCloud (cidata) volume, by their names on the volume. */
export function noCloudFiles(files: CloudInitFiles): Record<string, string> {
  return {
    "user-data": files.userData,
    "meta-data": files.metaData,
    "network-config": files.networkConfig,
  };
}

/** The package proxy's port on every per-VLAN proxy (squid's default). */
export const PROXY_PORT = 3128;
/** Name of the service NIC in the guest when the class gives neither name nor MAC. */
export const DEFAULT_SERVICE_NIC = "ens192";
/** Name of the boot NIC (the second vmxnet3) when the class gives neither name nor MAC. */
export const DEFAULT_BOOT_NIC = "ens224";
const HEREDOC_END = "VSOP_EOF";

/**
 * The kickstart and the bootstrap script write files through quoted here-documents; a line equal
 * to the terminator would end one early and run the rest as shell.
 */
function assertHeredocSafe(texts: Record<string, string | undefined>): void {
  for (const [name, text] of Object.entries(texts))
    if (text?.split("\n").some((l) => l.trim() === HEREDOC_END))
      throw new TemplateError(name, 1, `rendered file contains the line "${HEREDOC_END}"`);
}

export function renderKickstart(
  vars: InstallVariables,
  template?: string | Partial<KickstartTemplates>,
): string {
  const t = typeof template === "string" ? { kickstart: template } : (template ?? {});
  const ctx = templateContext(vars, t.mcollectiveServerCfg, t.puppetConf);
  assertHeredocSafe(ctx.files);
  return compileTemplate("kickstart", t.kickstart ?? defaults.KICKSTART).render(ctx);
}

/** The one-time key bundle (defaults.BOOTSTRAP), the only file that carries secrets. */
export function renderBootstrap(
  vars: InstallVariables,
  templates: { bootstrap?: string; mcollectiveServerCfg?: string } = {},
): string {
  const ctx = templateContext(vars, templates.mcollectiveServerCfg);
  assertHeredocSafe({ ...ctx.files, csrAttributes: vars.puppet.csrAttributes });
  return compileTemplate("bootstrap", templates.bootstrap ?? defaults.BOOTSTRAP).render(ctx);
}

/** Renders the three NoCloud files; the network config is checked for a default route. */
export function renderCloudInit(
  vars: InstallVariables,
  templates: Partial<CloudInitTemplates> = {},
): CloudInitFiles {
  const ctx = templateContext(vars, templates.mcollectiveServerCfg, templates.puppetConf);
  const networkConfig = compileTemplate(
    "network-config",
    templates.networkConfig ?? defaults.NETWORK_CONFIG,
  ).render(ctx);
  assertNoDefaultRoute(networkConfig);
  return {
    userData: compileTemplate("user-data", templates.userData ?? defaults.USER_DATA).render(ctx),
    metaData: compileTemplate("meta-data", templates.metaData ?? defaults.META_DATA).render(ctx),
    networkConfig,
  };
}

type ResolvedNic = { device: string; name: string; macAddress?: string };

/** What templates see: the variables, with optional lists defaulted, plus derived values. */
export interface TemplateContext extends Omit<InstallVariables, "bootNic" | "serviceNic"> {
  provisioning: InstallVariables["provisioning"] & {
    repos: Array<{ name: string; url: string }>;
    instanceId: string;
  };
  /** The service NIC; `device` is what kickstart's --device takes (MAC when known). */
  nic: ResolvedNic;
  bootNic?: ResolvedNic;
  /** http://<proxy>:3128 when the VLAN has a proxy. */
  proxyURL?: string;
  /** Rendered config files, as text. */
  files: { mcollectiveServerCfg: string; puppetConf: string };
  /** The same files, base64-encoded (for cloud-init write_files). */
  b64: Record<string, string>;
}

export function templateContext(
  vars: InstallVariables,
  mcollectiveServerCfg = defaults.MCOLLECTIVE_SERVER_CFG,
  puppetConf = defaults.PUPPET_CONF,
): TemplateContext {
  validateInstallVariables(vars);
  const m = vars.mcollective;
  const withNewline = (s: string | undefined) =>
    s === undefined || s.endsWith("\n") ? s : `${s}\n`;
  const mcollective = {
    ...m,
    serverPrivateKeyPem: withNewline(m.serverPrivateKeyPem),
    serverPublicKeyPem: withNewline(m.serverPublicKeyPem),
    clientPublicKeyPem: withNewline(m.clientPublicKeyPem),
    identityPrivateKeyPem: withNewline(m.identityPrivateKeyPem),
  };
  const { serviceNic, bootNic, ...rest } = vars;
  const base = {
    ...rest,
    mcollective,
    provisioning: {
      ...vars.provisioning,
      repos: vars.provisioning.repos ?? [],
      instanceId: vars.provisioning.instanceId ?? vars.hostname,
    },
    nic: resolveNic(serviceNic, DEFAULT_SERVICE_NIC),
    ...(bootNic ? { bootNic: resolveNic(bootNic, DEFAULT_BOOT_NIC) } : {}),
    ...(vars.services.proxy ? { proxyURL: `http://${vars.services.proxy}:${PROXY_PORT}` } : {}),
  };
  const files = {
    mcollectiveServerCfg: compileTemplate("mcollective-server.cfg", mcollectiveServerCfg).render(
      base,
    ),
    puppetConf: compileTemplate("puppet.conf", puppetConf).render(base),
  };
  const b64: Record<string, string> = {};
  const put = (key: string, text: string | undefined) => {
    if (text !== undefined) b64[key] = Buffer.from(text, "utf8").toString("base64");
  };
  put("mcollectiveServerCfg", files.mcollectiveServerCfg);
  put("puppetConf", files.puppetConf);
  return { ...base, files, b64 };
}

function resolveNic(nic: NicMatch | undefined, defaultName: string): ResolvedNic {
  const name = nic?.name ?? defaultName;
  const macAddress = nic?.macAddress?.toLowerCase();
  return macAddress ? { device: macAddress, name, macAddress } : { device: name, name };
}

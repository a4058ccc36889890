// A server's install files: the variables from its status (address, VLAN, services), its class
// (MCollective, Puppet) and the class's Secrets, rendered with the class's templates or vsop's.
import { effectiveNetwork, puppetEnvironment } from "../../api/defaults.js";
import type { VirtualServer, VirtualServerClass } from "../../api/types.js";
import { StepError } from "../../errors.js";
import { parseHostname } from "../../naming/hostname.js";
import { effectiveClass } from "../../api/effective-class.js";
import { csrAttributesYaml, trustedFacts } from "../../puppet/trusted-facts.js";
import {
  renderBootstrap,
  renderCloudInit,
  renderKickstart,
  type CloudInitFiles,
} from "../../provision/render.js";
import { TemplateError } from "../../provision/template.js";
import {
  InstallVariablesError,
  netmaskFromPrefix,
  type InstallVariables,
} from "../../provision/variables.js";
import type { ConfigReader } from "../clients/secrets.js";
import type { BootstrapSecrets } from "../../provision/sealed-keys.js";

export const DEFAULT_STOMP_PORT = 61613;

export interface InstallURLs {
  kickstartURL?: string;
  bootstrapURL?: string;
  builtURL?: string;
}

/**
 * cloud-init's instance-id: the object's UID, and a new one for each rebuild, so that cloud-init
 * on the rebuilt VM (iso, guestinfo) runs as on a new instance rather than skipping its data.
 */
export function instanceIdOf(vs: VirtualServer): string {
  const rebuilt = Date.parse(vs.status?.rebuild?.startedAt ?? "");
  return Number.isNaN(rebuilt)
    ? vs.metadata.uid!
    : `${vs.metadata.uid!}-rebuild-${Math.floor(rebuilt / 1000)}`;
}

/**
 * The variables of a server's install files. Keys, the broker login and the Puppet CA challenge
 * are read only for the one-time bootstrap (`secrets` given): the kickstart, ISO and guestinfo,
 * which outlive the install in places vsop does not control, never carry a secret.
 */
export async function installVariables(
  vs: VirtualServer,
  cls: VirtualServerClass,
  config: ConfigReader,
  urls: InstallURLs,
  secrets?: BootstrapSecrets,
): Promise<InstallVariables> {
  const parts = parseHostname(vs.spec.hostname, cls.spec.naming?.pattern);
  const s = vs.status ?? {};
  const net = effectiveNetwork(cls.spec);
  const m = cls.spec.mcollective;
  const mcollective: InstallVariables["mcollective"] = {
    brokerHost: new URL(m.brokerURL).hostname,
    brokerPort: m.stompPort ?? DEFAULT_STOMP_PORT,
    collective: m.collective ?? "mcollective",
    identity: vs.spec.hostname,
    clientCertName: m.clientCertName ?? "vsop",
  };
  const puppet: InstallVariables["puppet"] = {
    environment: puppetEnvironment(vs, cls.spec),
    ...(cls.spec.puppet?.server ? { server: cls.spec.puppet.server } : {}),
    ...(cls.spec.puppet?.serverPort ? { serverPort: cls.spec.puppet.serverPort } : {}),
  };
  if (secrets !== undefined) {
    const { identityPrivateKeyPem } = secrets;
    puppet.csrAttributes = csrAttributesYaml(
      secrets.challenge,
      trustedFacts(parts, effectiveClass(cls).puppet.extensionRequests),
    );
    const keys = await config.secret(m.keysSecret, "MCollective keys", [
      "server-private.pem",
      "server-public.pem",
      "client-public.pem",
    ]);
    const creds = m.credentialsSecret
      ? await config.secret(m.credentialsSecret, "MCollective broker credentials", [
          "username",
          "password",
        ])
      : undefined;
    Object.assign(mcollective, {
      brokerUser: creds?.username,
      brokerPassword: creds?.password,
      serverPrivateKeyPem: keys["server-private.pem"],
      serverPublicKeyPem: keys["server-public.pem"],
      clientPublicKeyPem: keys["client-public.pem"],
      identityPrivateKeyPem,
    });
  }
  const nics = s.vm?.nics ?? [];
  const serviceMac = nics.find((n) => n.role === "service")?.macAddress;
  const bootMac = nics.find((n) => n.role === "boot")?.macAddress;
  return {
    hostname: parts.hostname,
    shortName: parts.shortName,
    domain: parts.domain,
    apptype: parts.apptype,
    environment: parts.environment,
    instance: parts.instance,
    address: s.address!,
    prefixLength: net.prefixLength,
    netmask: netmaskFromPrefix(net.prefixLength),
    vlan: s.vlan!,
    services: {
      dns: s.services?.dns?.address,
      ntp: s.services?.ntp?.address,
      proxy: s.services?.proxy?.address,
    },
    mcollective,
    puppet,
    provisioning: { ...urls, instanceId: instanceIdOf(vs) },
    ...(serviceMac ? { serviceNic: { macAddress: serviceMac } } : {}),
    ...(bootMac ? { bootNic: { macAddress: bootMac } } : {}),
  };
}

async function templates(
  cls: VirtualServerClass,
  config: ConfigReader,
): Promise<Record<string, string>> {
  const name = cls.spec.boot?.templatesConfigMap;
  return name ? config.configMap(name, "install templates") : {};
}

/** Turns a template or variable problem into TemplateError, naming the template and line. */
function asStepError(err: unknown, cmName: string | undefined): never {
  if (err instanceof TemplateError)
    throw new StepError(
      "TemplateError",
      `Install template "${err.template}"${cmName ? ` (ConfigMap ${cmName})` : ""} line ${err.line}: ` +
        `${err.detail}. Fix the template.`,
      { condition: "Installed", cause: err },
    );
  if (err instanceof InstallVariablesError)
    throw new StepError("TemplateError", `Install variable ${err.field}: ${err.detail}.`, {
      condition: "Installed",
      cause: err,
    });
  throw err;
}

export async function kickstartFor(
  vs: VirtualServer,
  cls: VirtualServerClass,
  config: ConfigReader,
  urls: InstallURLs,
): Promise<string> {
  const vars = await installVariables(vs, cls, config, urls);
  const t = await templates(cls, config);
  try {
    return renderKickstart(vars, { ...(t.kickstart ? { kickstart: t.kickstart } : {}) });
  } catch (err) {
    asStepError(err, cls.spec.boot?.templatesConfigMap);
  }
}

export async function cloudInitFor(
  vs: VirtualServer,
  cls: VirtualServerClass,
  config: ConfigReader,
  urls: InstallURLs,
): Promise<CloudInitFiles> {
  const vars = await installVariables(vs, cls, config, urls);
  const t = await templates(cls, config);
  try {
    return renderCloudInit(vars, {
      ...(t["user-data"] ? { userData: t["user-data"] } : {}),
      ...(t["meta-data"] ? { metaData: t["meta-data"] } : {}),
      ...(t["network-config"] ? { networkConfig: t["network-config"] } : {}),
    });
  } catch (err) {
    asStepError(err, cls.spec.boot?.templatesConfigMap);
  }
}

/** The one-time key bundle for the server, with its new identity key and CA challenge. */
export async function bootstrapFor(
  vs: VirtualServer,
  cls: VirtualServerClass,
  config: ConfigReader,
  secrets: BootstrapSecrets,
): Promise<string> {
  const vars = await installVariables(vs, cls, config, {}, secrets);
  const t = await templates(cls, config);
  try {
    return renderBootstrap(vars, t.bootstrap ? { bootstrap: t.bootstrap } : {});
  } catch (err) {
    asStepError(err, cls.spec.boot?.templatesConfigMap);
  }
}

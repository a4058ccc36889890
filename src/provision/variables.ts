// The values a kickstart or cloud-init file is rendered from, and their checks. Everything
// here lands in shell scripts, YAML and config files, so values are checked before rendering:
// a newline in a password would otherwise add lines to mcollective's server.cfg.
import { isIPv4 } from "node:net";

export interface NicMatch {
  /** MAC address, e.g. "00:50:56:aa:bb:cc"; preferred for matching when set. */
  macAddress?: string;
  /** Interface name in the guest, e.g. "ens192". */
  name?: string;
}

export interface InstallVariables {
  /** FQDN, e.g. web-prod-1.example.com. */
  hostname: string;
  /** First label of the FQDN, e.g. web-prod-1. */
  shortName: string;
  domain: string;
  apptype: string;
  environment: string;
  instance: string;
  /** The server's address in its service VLAN. */
  address: string;
  prefixLength: number;
  /** Dotted netmask matching prefixLength (see netmaskFromPrefix). */
  netmask: string;
  vlan: number;
  /** Per-VLAN service addresses (dns-30, ntp-30, proxy-30 resolved). */
  services: { dns?: string; ntp?: string; proxy?: string };
  mcollective: {
    brokerHost: string;
    brokerPort: number;
    brokerUser?: string;
    brokerPassword?: string;
    collective: string;
    /** mcollectived's identity: the FQDN. */
    identity: string;
    serverPrivateKeyPem?: string;
    serverPublicKeyPem?: string;
    clientPublicKeyPem?: string;
    /** The server's own identity key (bootstrap only; see provision/identity-key.ts). */
    identityPrivateKeyPem?: string;
    /** Requests carry callerid `cert=<name>`; the server reads `<client dir>/<name>.pem`. */
    clientCertName: string;
  };
  puppet: {
    environment: string;
    /** The Puppet master the server's agent talks to, and its port when not 8140. */
    server?: string;
    serverPort?: number;
    /**
     * csr_attributes.yaml (bootstrap only): the one-time autosign challenge and the trusted facts
     * (see puppet/trusted-facts.ts); it carries a secret, so nothing else renders it.
     */
    csrAttributes?: string;
  };
  provisioning: {
    kickstartURL?: string;
    /** One-time key bundle: the installing system POSTs here once and runs what it gets. */
    bootstrapURL?: string;
    /** Completion callback: the installed system POSTs here once. */
    builtURL?: string;
    /** Kickstart `url --url=`; without it the installer uses its boot command line's repo. */
    installURL?: string;
    /** Extra kickstart `repo` lines. */
    repos?: Array<{ name: string; url: string }>;
    /** cloud-init instance-id; defaults to the hostname. */
    instanceId?: string;
  };
  /** The service-VLAN NIC; matched by MAC when given. Default name: ens192 (first vmxnet3). */
  serviceNic?: NicMatch;
  /** The Boot-VLAN NIC of a network install; kept down in the installed system. */
  bootNic?: NicMatch;
}

export class InstallVariablesError extends Error {
  override name = "InstallVariablesError";
  constructor(
    readonly field: string,
    readonly detail: string,
  ) {
    super(`install variable ${field}: ${detail}`);
  }
}

/** 24 → "255.255.255.0". */
export function netmaskFromPrefix(prefixLength: number): string {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32)
    throw new RangeError(`prefix length ${prefixLength} is not an integer from 0 to 32`);
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join(".");
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const WORD = /^[A-Za-z0-9_.-]+$/;
/** No whitespace, quotes, backslashes or shell metacharacters: URLs go into shell lines. */
const URL_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!&()*+,;=%]+$/;
const PEM = /^-----BEGIN [A-Z0-9 ]+-----\r?\n[A-Za-z0-9+/=\r\n]+-----END [A-Z0-9 ]+-----\r?\n?$/;

function isFqdn(s: string): boolean {
  return s.length <= 253 && s.split(".").length >= 2 && s.split(".").every((l) => LABEL.test(l));
}

/** Throws InstallVariablesError for the first value that cannot be rendered safely. */
export function validateInstallVariables(v: InstallVariables): void {
  const fail = (field: string, detail: string): never => {
    throw new InstallVariablesError(field, detail);
  };
  const word = (field: string, s: string | undefined, optional = false) => {
    if (s === undefined && optional) return;
    if (typeof s !== "string" || !WORD.test(s)) fail(field, `${JSON.stringify(s)} is not a name`);
  };
  const ipv4 = (field: string, s: string | undefined) => {
    if (s !== undefined && !isIPv4(s)) fail(field, `${JSON.stringify(s)} is not an IPv4 address`);
  };
  const host = (field: string, s: string | undefined) => {
    if (s !== undefined && !isIPv4(s) && !isFqdn(s) && !LABEL.test(s))
      fail(field, `${JSON.stringify(s)} is not a host name or IPv4 address`);
  };
  const url = (field: string, s: string | undefined) => {
    if (s === undefined) return;
    if (!/^https?:\/\//.test(s) || !URL_CHARS.test(s))
      fail(field, "must be an http(s) URL without spaces or quotes");
  };
  const line = (field: string, s: string | undefined) => {
    if (s !== undefined && (s === "" || /[\r\n\0]/.test(s)))
      fail(field, "must be a non-empty single line");
  };
  const pem = (field: string, s: string | undefined) => {
    if (s !== undefined && !PEM.test(s)) fail(field, "is not a single PEM block");
  };
  const nic = (field: string, n: NicMatch | undefined) => {
    if (!n) return;
    if (n.macAddress !== undefined && !MAC.test(n.macAddress))
      fail(`${field}.macAddress`, `${JSON.stringify(n.macAddress)} is not a MAC address`);
    if (n.name !== undefined && !IFNAME.test(n.name))
      fail(`${field}.name`, `${JSON.stringify(n.name)} is not an interface name`);
  };

  if (!isFqdn(v.hostname)) fail("hostname", `${JSON.stringify(v.hostname)} is not an FQDN`);
  if (v.hostname !== `${v.shortName}.${v.domain}`)
    fail("shortName", `${v.shortName}.${v.domain} does not spell ${v.hostname}`);
  word("apptype", v.apptype);
  word("environment", v.environment);
  word("instance", v.instance);
  if (!isIPv4(v.address)) fail("address", `${JSON.stringify(v.address)} is not an IPv4 address`);
  if (!Number.isInteger(v.prefixLength) || v.prefixLength < 1 || v.prefixLength > 32)
    fail("prefixLength", `${v.prefixLength} is not from 1 to 32`);
  if (v.netmask !== netmaskFromPrefix(v.prefixLength))
    fail("netmask", `${v.netmask} does not match /${v.prefixLength}`);
  if (!Number.isInteger(v.vlan) || v.vlan < 1 || v.vlan > 4094)
    fail("vlan", `${v.vlan} is not from 1 to 4094`);
  ipv4("services.dns", v.services.dns);
  host("services.ntp", v.services.ntp);
  host("services.proxy", v.services.proxy);

  const m = v.mcollective;
  host("mcollective.brokerHost", m.brokerHost);
  if (!Number.isInteger(m.brokerPort) || m.brokerPort < 1 || m.brokerPort > 65535)
    fail("mcollective.brokerPort", `${m.brokerPort} is not a port`);
  line("mcollective.brokerUser", m.brokerUser);
  line("mcollective.brokerPassword", m.brokerPassword);
  word("mcollective.collective", m.collective);
  if (!isFqdn(m.identity)) fail("mcollective.identity", `${m.identity} is not an FQDN`);
  word("mcollective.clientCertName", m.clientCertName);
  pem("mcollective.serverPrivateKeyPem", m.serverPrivateKeyPem);
  pem("mcollective.serverPublicKeyPem", m.serverPublicKeyPem);
  pem("mcollective.clientPublicKeyPem", m.clientPublicKeyPem);
  pem("mcollective.identityPrivateKeyPem", m.identityPrivateKeyPem);

  word("puppet.environment", v.puppet.environment);
  host("puppet.server", v.puppet.server);
  if (
    v.puppet.serverPort !== undefined &&
    (!Number.isInteger(v.puppet.serverPort) ||
      v.puppet.serverPort < 1 ||
      v.puppet.serverPort > 65535)
  )
    fail("puppet.serverPort", `${v.puppet.serverPort} is not a port`);
  if (v.puppet.csrAttributes !== undefined && !/^[\x20-\x7e\n]+$/.test(v.puppet.csrAttributes))
    fail("puppet.csrAttributes", "must be printable ASCII lines");

  const p = v.provisioning;
  url("provisioning.kickstartURL", p.kickstartURL);
  url("provisioning.builtURL", p.builtURL);
  url("provisioning.bootstrapURL", p.bootstrapURL);
  url("provisioning.installURL", p.installURL);
  (p.repos ?? []).forEach((r, i) => {
    word(`provisioning.repos[${i}].name`, r.name);
    url(`provisioning.repos[${i}].url`, r.url);
  });
  word("provisioning.instanceId", p.instanceId, true);
  nic("serviceNic", v.serviceNic);
  nic("bootNic", v.bootNic);
}

// The templates vsop ships. A VirtualServerClass may replace any of them; they are rendered
// against the context built in render.ts (InstallVariables plus derived values: `nic`,
// `proxyURL`, `files`, `b64`).
//
// Network rule of the site: a server has no default route. It reaches the outside only through
// the per-VLAN service addresses, so no template here writes a gateway or a 0.0.0.0/0 route.

/** mcollectived's server.cfg: RabbitMQ connector, ssl security with the Marshal serializer. */
export const MCOLLECTIVE_SERVER_CFG = `# mcollectived configuration for {{mcollective.identity}}, written by vsop
main_collective = {{mcollective.collective}}
collectives = {{mcollective.collective}}
identity = {{mcollective.identity}}
libdir = /usr/share/mcollective/plugins:/usr/libexec/mcollective
logfile = /var/log/mcollective.log
loglevel = info
daemonize = 1

connector = rabbitmq
plugin.rabbitmq.vhost = /
plugin.rabbitmq.pool.size = 1
plugin.rabbitmq.pool.1.host = {{mcollective.brokerHost}}
plugin.rabbitmq.pool.1.port = {{mcollective.brokerPort}}
{{#if mcollective.brokerUser}}
plugin.rabbitmq.pool.1.user = {{mcollective.brokerUser}}
{{/if}}
{{#if mcollective.brokerPassword}}
plugin.rabbitmq.pool.1.password = {{mcollective.brokerPassword}}
{{/if}}

securityprovider = ssl
plugin.ssl_serializer = marshal
plugin.ssl_server_private = /etc/mcollective/ssl/server_private.pem
plugin.ssl_server_public = /etc/mcollective/ssl/server_public.pem
plugin.ssl_client_cert_dir = /etc/mcollective/ssl/clients
# vsop's puppet agent signs its replies with this server's own key (per-server identity).
plugin.vsop.identity_key = /etc/mcollective/vsop/identity.pem

factsource = yaml
plugin.yaml = /etc/mcollective/facts.yaml
`;

/**
 * The agent's puppet.conf. csr_attributes points at the file the one-time bootstrap writes (the
 * same path for Debian's /etc/puppet and Puppet's own /etc/puppetlabs/puppet packages).
 */
export const PUPPET_CONF = `# written by vsop
[main]
environment = {{puppet.environment}}
{{#if puppet.server}}
server = {{puppet.server}}
{{/if}}
{{#if puppet.serverPort}}
serverport = {{puppet.serverPort}}
{{/if}}
csr_attributes = /etc/puppetlabs/puppet/csr_attributes.yaml
`;

/**
 * RHEL-style kickstart for a network install over the Boot-VLAN (the boot NIC fetched this file),
 * or for an installer image booted from CD (iso with boot.installerISO: anaconda read this file as
 * ks.cfg from the OEMDRV volume; no boot NIC). The service NIC gets its static address without a
 * default route, and packages come through the VLAN's proxy. %post writes MCollective and Puppet
 * configuration, then reports completion: over the boot NIC when there is one, else through the
 * VLAN's proxy, like cloud-init's user-data.
 */
export const KICKSTART = `# kickstart for {{hostname}} (VLAN {{vlan}}), rendered by vsop
text
lang en_US.UTF-8
keyboard us
timezone Etc/UTC --utc{{#if services.ntp}} --ntpservers={{services.ntp}}{{/if}}

{{#if provisioning.installURL}}
url --url={{provisioning.installURL}}{{#if proxyURL}} --proxy={{proxyURL}}{{/if}}
{{/if}}
{{#each provisioning.repos}}
repo --name={{name}} --baseurl={{url}}{{#if proxyURL}} --proxy={{proxyURL}}{{/if}}
{{/each}}

network --device={{nic.device}} --bootproto=static --ip={{address}} --netmask={{netmask}}{{#if services.dns}} --nameserver={{services.dns}}{{/if}} --nodefroute --noipv6 --onboot=yes --activate --hostname={{hostname}}
{{#if bootNic}}
network --device={{bootNic.device}} --bootproto=dhcp --onboot=no
{{/if}}

rootpw --lock
selinux --enforcing
firewall --enabled --ssh
firstboot --disabled
skipx
zerombr
ignoredisk --only-use=sda
clearpart --all --initlabel --drives=sda
autopart --type=lvm --nohome
bootloader --timeout=1
{{#if bootNic}}
reboot
{{else}}
reboot --eject
{{/if}}

%packages --ignoremissing
@core
curl
chrony
mcollective
puppet-agent
%end

%post --log=/root/vsop-post.log
mkdir -p /etc/puppetlabs/puppet
cat > /etc/puppetlabs/puppet/puppet.conf <<'VSOP_EOF'
{{files.puppetConf}}VSOP_EOF
{{#if proxyURL}}
grep -q '^proxy=' /etc/yum.conf || echo 'proxy={{proxyURL}}' >> /etc/yum.conf
{{/if}}
{{#if provisioning.bootstrapURL}}
# Keys and the broker login come once from vsop: this file carries no secret. The nonce, the
# same on every try, lets a try whose answer was lost get the same keys again.
umask 077
nonce=$(od -An -N16 -tx1 /dev/urandom | tr -dc 0-9a-f)
for try in 1 2 3 4 5; do
  curl -fsS --retry 5{{#if bootNic}}{{else}}{{#if proxyURL}} --proxy '{{proxyURL}}'{{/if}}{{/if}} -H "X-Vsop-Installer-Nonce: $nonce" -X POST '{{provisioning.bootstrapURL}}' -o /root/vsop-bootstrap.sh && break
  sleep 5
done
sh /root/vsop-bootstrap.sh
rm -f /root/vsop-bootstrap.sh
umask 022
{{/if}}
systemctl enable mcollective.service || true
{{#if provisioning.builtURL}}
# Report completion: the operator then takes the install path away (boot NIC, ISOs).
curl -fsS --retry 5{{#if bootNic}}{{else}}{{#if proxyURL}} --proxy '{{proxyURL}}'{{/if}}{{/if}} -X POST '{{provisioning.builtURL}}'
{{/if}}
%end
`;

/** cloud-init user-data. File contents travel base64-encoded so no value can break the YAML. */
export const USER_DATA = `#cloud-config
hostname: "{{shortName}}"
fqdn: "{{hostname}}"
prefer_fqdn_over_hostname: true
manage_etc_hosts: true
{{#if services.ntp}}
ntp:
  enabled: true
  servers:
    - "{{services.ntp}}"
{{/if}}
{{#if proxyURL}}
apt:
  http_proxy: "{{proxyURL}}"
  https_proxy: "{{proxyURL}}"
bootcmd:
  - [sh, -c, 'if [ -f /etc/yum.conf ] && ! grep -q "^proxy=" /etc/yum.conf; then echo "proxy={{proxyURL}}" >> /etc/yum.conf; fi']
{{/if}}
write_files:
  - path: /etc/puppet/puppet.conf
    owner: root:root
    permissions: "0644"
    encoding: b64
    content: {{b64.puppetConf}}
runcmd:
{{#if provisioning.bootstrapURL}}
  # Keys and the broker login come once from vsop: this file and its copies carry no secret.
  # The nonce, the same on every try, lets a try whose answer was lost get the same keys again.
  - [sh, -c, 'umask 077; n=$(od -An -N16 -tx1 /dev/urandom | tr -dc 0-9a-f); for try in 1 2 3 4 5; do curl -fsS --retry 5{{#if proxyURL}} --proxy {{proxyURL}}{{/if}} -H "X-Vsop-Installer-Nonce: $n" -X POST {{provisioning.bootstrapURL}} -o /run/vsop-bootstrap.sh && break; sleep 5; done; sh /run/vsop-bootstrap.sh && rm -f /run/vsop-bootstrap.sh']
{{/if}}
  - [systemctl, restart, mcollective.service]
{{#if provisioning.builtURL}}
  # Without a default route the callback goes through the VLAN's proxy, when there is one.
  - [curl, -fsS, --retry, "5",{{#if proxyURL}} --proxy, "{{proxyURL}}",{{/if}} -X, POST, "{{provisioning.builtURL}}"]
{{/if}}
`;

/**
 * The one-time key bundle, a shell script the installing system runs as root: mcollectived's
 * server.cfg with the broker login, the shared ssl keys, vsop's client key, the server's own
 * identity key, and csr_attributes.yaml with its one-time Puppet CA challenge. Served once by POST /bootstrap/<token>; nothing else carries these.
 */
export const BOOTSTRAP = `#!/bin/sh
# MCollective keys for {{hostname}}, from vsop. Served once; run as root.
set -eu
umask 077
mkdir -p /etc/mcollective/ssl/clients /etc/mcollective/vsop
cat > /etc/mcollective/server.cfg <<'VSOP_EOF'
{{files.mcollectiveServerCfg}}VSOP_EOF
{{#if mcollective.serverPrivateKeyPem}}
cat > /etc/mcollective/ssl/server_private.pem <<'VSOP_EOF'
{{mcollective.serverPrivateKeyPem}}VSOP_EOF
{{/if}}
{{#if mcollective.serverPublicKeyPem}}
cat > /etc/mcollective/ssl/server_public.pem <<'VSOP_EOF'
{{mcollective.serverPublicKeyPem}}VSOP_EOF
chmod 0644 /etc/mcollective/ssl/server_public.pem
{{/if}}
{{#if mcollective.clientPublicKeyPem}}
cat > /etc/mcollective/ssl/clients/{{mcollective.clientCertName}}.pem <<'VSOP_EOF'
{{mcollective.clientPublicKeyPem}}VSOP_EOF
chmod 0644 /etc/mcollective/ssl/clients/{{mcollective.clientCertName}}.pem
{{/if}}
{{#if mcollective.identityPrivateKeyPem}}
cat > /etc/mcollective/vsop/identity.pem <<'VSOP_EOF'
{{mcollective.identityPrivateKeyPem}}VSOP_EOF
{{/if}}
{{#if puppet.csrAttributes}}
# The Puppet CA signs this server's first certificate request when it carries this challenge.
mkdir -p /etc/puppetlabs/puppet
cat > /etc/puppetlabs/puppet/csr_attributes.yaml <<'VSOP_EOF'
{{puppet.csrAttributes}}VSOP_EOF
{{/if}}
`;

export const META_DATA = `instance-id: "{{provisioning.instanceId}}"
local-hostname: "{{hostname}}"
`;

/** Network config version 2: static address on the service NIC, no gateway, no routes. */
export const NETWORK_CONFIG = `version: 2
ethernets:
  {{nic.name}}:
{{#if nic.macAddress}}
    match:
      macaddress: "{{nic.macAddress}}"
    set-name: {{nic.name}}
{{/if}}
    dhcp4: false
    dhcp6: false
    addresses:
      - "{{address}}/{{prefixLength}}"
    nameservers:
      search: ["{{domain}}"]
{{#if services.dns}}
      addresses: ["{{services.dns}}"]
{{/if}}
`;

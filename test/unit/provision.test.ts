import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { load } from "js-yaml";
import { pino } from "pino";
import { renderTemplate, compileTemplate, TemplateError } from "../../src/provision/template.js";
import {
  netmaskFromPrefix,
  validateInstallVariables,
  InstallVariablesError,
  type InstallVariables,
} from "../../src/provision/variables.js";
import { renderBootstrap, renderKickstart, renderCloudInit } from "../../src/provision/render.js";
import { csrAttributesYaml } from "../../src/puppet/trusted-facts.js";
import { assertNoDefaultRoute, NetworkConfigError } from "../../src/provision/network-config.js";
import { guestinfoExtraConfig, GUESTINFO_KEYS } from "../../src/provision/guestinfo.js";
import { newToken, hashToken, isWellFormedToken, tokenLogId } from "../../src/provision/tokens.js";
import { ProvisioningServer, type TokenState } from "../../src/provision/server.js";

// ---------------------------------------------------------------- sample data (VLAN 30)

const keys = generateKeyPairSync("rsa", {
  modulusLength: 2048,
  privateKeyEncoding: { type: "pkcs8", format: "pem" },
  publicKeyEncoding: { type: "spki", format: "pem" },
});
/** A line from inside the private key, to look for it without its PEM armour. */
const KEY_BODY = keys.privateKey.split("\n")[5]!;

function sampleVars(overrides: Partial<InstallVariables> = {}): InstallVariables {
  return {
    hostname: "web-prod-1.example.com",
    shortName: "web-prod-1",
    domain: "example.com",
    apptype: "web",
    environment: "prod",
    instance: "1",
    address: "10.12.30.20",
    prefixLength: 24,
    netmask: netmaskFromPrefix(24),
    vlan: 30,
    services: { dns: "10.12.30.2", ntp: "10.12.30.4", proxy: "10.12.30.3" },
    mcollective: {
      brokerHost: "broker.example.com",
      brokerPort: 61613,
      brokerUser: "mcollective",
      brokerPassword: "s3cret: #not-a-comment",
      collective: "mcollective",
      identity: "web-prod-1.example.com",
      serverPrivateKeyPem: keys.privateKey,
      serverPublicKeyPem: keys.publicKey,
      clientPublicKeyPem: keys.publicKey,
      clientCertName: "vsop",
    },
    puppet: { environment: "production", server: "puppet.example.com" },
    provisioning: {
      kickstartURL: "http://10.99.0.1:8081/ks/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      builtURL: "http://10.99.0.1:8081/built/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      bootstrapURL: "http://10.99.0.1:8081/bootstrap/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      installURL: "http://mirror.example.com/rhel9/BaseOS/x86_64/os",
      repos: [{ name: "appstream", url: "http://mirror.example.com/rhel9/AppStream/x86_64/os" }],
    },
    serviceNic: { macAddress: "00:50:56:12:34:56" },
    bootNic: { name: "ens224" },
    ...overrides,
  };
}

/** No proxy, no NTP, no keys, no callback, NIC by name: every optional part left out. */
function minimalVars(): InstallVariables {
  const v = sampleVars();
  return {
    ...v,
    services: { dns: "10.12.30.2" },
    mcollective: {
      brokerHost: "10.12.0.5",
      brokerPort: 61613,
      collective: "mcollective",
      identity: v.hostname,
      clientCertName: "vsop",
    },
    puppet: { environment: "production" },
    provisioning: {},
    serviceNic: { name: "eth1" },
    bootNic: undefined,
  };
}

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "vsop-test-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The Python that runs cloud-init (its shebang), to call cloud-init's own parsers. */
function cloudInitPython(): string {
  const bin = execFileSync("sh", ["-c", "command -v cloud-init"], { encoding: "utf8" }).trim();
  const shebang = readFileSync(bin, "utf8").split("\n")[0]!;
  return shebang.replace(/^#!\s*/, "").split(/\s+/)[0]!;
}

// ---------------------------------------------------------------- template engine

test("template: variables, dotted paths and scalars", () => {
  const out = renderTemplate("t", "{{ name }} dns={{services.dns}} port={{port}} on={{on}}", {
    name: "web",
    services: { dns: "10.12.30.2" },
    port: 61613,
    on: false,
  });
  assert.equal(out, "web dns=10.12.30.2 port=61613 on=false");
});

test("template: each with this, @index, item fields and outer variables", () => {
  const vars = { list: ["a", "b"], repos: [{ name: "x" }, { name: "y" }], suffix: "!" };
  assert.equal(
    renderTemplate("t", "{{#each list}}[{{@index}}:{{this}}]{{/each}}", vars),
    "[0:a][1:b]",
  );
  assert.equal(
    renderTemplate("t", "{{#each repos}}{{name}}{{this.name}}{{suffix}} {{/each}}", vars),
    "xx! yy! ",
  );
  assert.equal(renderTemplate("t", "{{#each none}}x{{else}}empty{{/each}}", { none: [] }), "empty");
});

test("template: if/else, nested blocks and falsy values", () => {
  const t = compileTemplate("t", "{{#if a}}A{{#if b.c}}C{{else}}-{{/if}}{{else}}none{{/if}}");
  assert.equal(t.render({ a: true, b: { c: "x" } }), "AC");
  assert.equal(t.render({ a: "yes", b: {} }), "A-");
  for (const a of [undefined, false, "", 0, []]) assert.equal(t.render({ a }), "none");
});

test("template: a block tag alone on its line leaves no blank line", () => {
  const src =
    "start\n{{#if on}}\n  on: {{v}}\n{{else}}\n  off\n{{/if}}\n{{#each xs}}\n- {{this}}\n{{/each}}\nend\n";
  assert.equal(
    renderTemplate("t", src, { on: true, v: 1, xs: ["a", "b"] }),
    "start\n  on: 1\n- a\n- b\nend\n",
  );
  assert.equal(renderTemplate("t", src, { on: false, xs: [] }), "start\n  off\nend\n");
  // Inline blocks keep their line.
  assert.equal(renderTemplate("t", "x{{#if on}} y{{/if}}\nz", { on: true }), "x y\nz");
});

test("template: an undefined variable is a TemplateError naming template, line and variable", () => {
  const src =
    "text\nnetwork --nameserver={{services.dns}}\ntimezone --ntpservers={{ services.ntpp }}\n";
  assert.throws(
    () => renderTemplate("kickstart", src, { services: { dns: "10.12.30.2", ntp: "x" } }),
    (err: unknown) => {
      assert.ok(err instanceof TemplateError);
      assert.equal(err.template, "kickstart");
      assert.equal(err.line, 3);
      assert.equal(err.message, 'template "kickstart" line 3: undefined variable "services.ntpp"');
      return true;
    },
  );
  // Also inside a loop, with the line of the tag, and for each over a missing list.
  assert.throws(
    () => renderTemplate("t", "a\nb\n{{#each xs}}\n{{this.nope}}\n{{/each}}", { xs: [{}] }),
    /template "t" line 4: undefined variable "this.nope"/,
  );
  assert.throws(
    () => renderTemplate("t", "\n{{#each xs}}{{/each}}", {}),
    /line 2: undefined variable "xs"/,
  );
});

test("template: no prototype access, no objects printed, no code", () => {
  assert.throws(
    () => renderTemplate("t", "{{constructor}}", {}),
    /undefined variable "constructor"/,
  );
  assert.throws(() => renderTemplate("t", "{{a.toString}}", { a: {} }), /undefined variable/);
  assert.throws(() => renderTemplate("t", "{{a}}", { a: { b: 1 } }), /"a" is an object/);
  assert.throws(() => renderTemplate("t", "{{a}}", { a: [1] }), /"a" is a list/);
  assert.throws(() => renderTemplate("t", "{{ a + 1 }}", { a: 1 }), /invalid tag/);
  assert.throws(() => renderTemplate("t", "{{#each a}}{{/each}}", { a: "abc" }), /not a list/);
});

test("template: unclosed and mismatched blocks are errors at parse time", () => {
  assert.throws(
    () => compileTemplate("user-data", "a\n{{#if x}}\nb\n{{#each ys}}\n{{/if}}\n"),
    /template "user-data" line 5: "\{\{\/if\}\}" closes \{\{#each ys\}\} opened at line 4/,
  );
  assert.throws(
    () => compileTemplate("user-data", "a\n\n{{#each ys}}\nb\n"),
    (err: unknown) =>
      err instanceof TemplateError &&
      err.line === 3 &&
      /unclosed block \{\{#each ys\}\}/.test(err.message),
  );
  assert.throws(() => compileTemplate("t", "{{/if}}"), /without an opening tag/);
  assert.throws(() => compileTemplate("t", "{{else}}"), /outside a block/);
  assert.throws(() => compileTemplate("t", "x\n{{name"), /line 2: unterminated tag/);
});

// ---------------------------------------------------------------- variables

test("netmask from prefix length", () => {
  assert.equal(netmaskFromPrefix(24), "255.255.255.0");
  assert.equal(netmaskFromPrefix(27), "255.255.255.224");
  assert.equal(netmaskFromPrefix(16), "255.255.0.0");
  assert.equal(netmaskFromPrefix(32), "255.255.255.255");
  assert.equal(netmaskFromPrefix(0), "0.0.0.0");
  assert.throws(() => netmaskFromPrefix(33), RangeError);
  assert.throws(() => netmaskFromPrefix(2.5), RangeError);
});

test("install variables that could break a file are refused", () => {
  validateInstallVariables(sampleVars());
  validateInstallVariables(minimalVars());
  const bad: Array<[string, InstallVariables]> = [
    [
      "mcollective.brokerPassword",
      {
        ...sampleVars(),
        mcollective: { ...sampleVars().mcollective, brokerPassword: "a\nconnector = x" },
      },
    ],
    ["serviceNic.macAddress", sampleVars({ serviceNic: { macAddress: "00:50:56:12:34" } })],
    ["netmask", sampleVars({ netmask: "255.255.0.0" })],
    ["provisioning.builtURL", sampleVars({ provisioning: { builtURL: "http://x/'; reboot; '" } })],
    ["hostname", sampleVars({ hostname: "web prod" })],
    ["services.dns", sampleVars({ services: { dns: "dns-30" } })],
  ];
  for (const [field, v] of bad)
    assert.throws(
      () => renderKickstart(v),
      (err: unknown) => err instanceof InstallVariablesError && err.field === field,
      field,
    );
});

// ---------------------------------------------------------------- kickstart

test("default kickstart carries the VLAN 30 settings and no gateway", () => {
  const ks = renderKickstart(sampleVars());
  const network = ks.split("\n").find((l) => l.startsWith("network --device=00:50:56"));
  assert.ok(network, "a network line for the service NIC");
  for (const part of [
    "--bootproto=static",
    "--ip=10.12.30.20",
    "--netmask=255.255.255.0",
    "--nameserver=10.12.30.2",
    "--nodefroute",
    "--hostname=web-prod-1.example.com",
  ])
    assert.ok(network.includes(part), part);
  assert.ok(!ks.includes("--gateway"));
  assert.match(ks, /^text$/m);
  assert.match(ks, /^timezone .*--ntpservers=10\.12\.30\.4$/m);
  assert.match(
    ks,
    /^url --url=http:\/\/mirror\.example\.com\S+ --proxy=http:\/\/10\.12\.30\.3:3128$/m,
  );
  assert.match(ks, /^repo --name=appstream --baseurl=\S+ --proxy=http:\/\/10\.12\.30\.3:3128$/m);
  assert.match(ks, /^network --device=ens224 --bootproto=dhcp --onboot=no$/m);
  assert.match(ks, /^environment = production$/m);
  // No key and no broker login: those come once from the bootstrap URL.
  assert.ok(!ks.includes("PRIVATE KEY") && !ks.includes("s3cret") && !ks.includes(KEY_BODY));
  assert.match(
    ks,
    /^ {2}curl -fsS .*-H "X-Vsop-Installer-Nonce: \$nonce" -X POST 'http:\/\/10\.99\.0\.1:8081\/bootstrap\/A+' -o \S+ && break$/m,
  );
  assert.match(ks, /^curl -fsS .*-X POST 'http:\/\/10\.99\.0\.1:8081\/built\/A+'$/m);
  assert.ok(!/\{\{|\}\}/.test(ks), "no template tags left");
  // A rebuild reinstalls with the data disks attached: only the system disk is partitioned.
  assert.match(ks, /^ignoredisk --only-use=sda$/m);
  for (const l of ks.split("\n").filter((l) => /^(clearpart|zerombr|part|autopart)\b/.test(l)))
    assert.ok(!l.startsWith("clearpart") || l.includes("--drives=sda"), l);

  // The %post section is valid shell.
  const post = /^%post[^\n]*\n([\s\S]*?)^%end$/m.exec(ks)?.[1];
  assert.ok(post);
  const r = spawnSync("bash", ["-n"], { input: post, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});

test("kickstart without a boot NIC (OEMDRV on CD): calls to vsop through the VLAN's proxy, media ejected", () => {
  const ks = renderKickstart(sampleVars({ bootNic: undefined }));
  const calls = ks.split("\n").filter((l) => l.trimStart().startsWith("curl -fsS"));
  assert.equal(calls.length, 2);
  for (const l of calls) assert.match(l, / --proxy 'http:\/\/10\.12\.30\.3:3128' (-H .* )?-X POST/);
  assert.ok(!/--device=\S+ --bootproto=dhcp/.test(ks), "no boot NIC line");
  // The installer image is ejected, so a reboot before vsop's handoff does not install again.
  assert.match(ks, /^reboot --eject$/m);
  assert.match(renderKickstart(sampleVars()), /^reboot$/m);
  // With a boot NIC they go straight to vsop over the Boot-VLAN.
  for (const l of renderKickstart(sampleVars())
    .split("\n")
    .filter((l) => l.trimStart().startsWith("curl")))
    assert.ok(!l.includes("--proxy"), l);
  const post = /^%post[^\n]*\n([\s\S]*?)^%end$/m.exec(ks)?.[1];
  assert.equal(spawnSync("bash", ["-n"], { input: post, encoding: "utf8" }).status, 0);
});

test("kickstart without proxy, ntp, keys or callback leaves those parts out", () => {
  const ks = renderKickstart(minimalVars());
  assert.ok(!ks.includes("proxy"));
  assert.ok(!ks.includes("--ntpservers"));
  assert.ok(!ks.includes("BEGIN"));
  assert.ok(!ks.includes("curl -fsS"));
  assert.ok(!ks.includes("pool.1.password"));
  assert.match(ks, /^network --device=eth1 --bootproto=static .*--nodefroute/m);
  assert.ok(!ks.includes("--gateway"));
  // A class's own kickstart template is used instead of the default.
  assert.equal(
    renderKickstart(minimalVars(), "host {{hostname}}\n"),
    "host web-prod-1.example.com\n",
  );
});

// ---------------------------------------------------------------- cloud-init

test("rendered user-data passes cloud-init's schema check", () => {
  for (const vars of [sampleVars(), minimalVars()]) {
    const { userData } = renderCloudInit(vars);
    withTempDir((dir) => {
      const file = join(dir, "user-data");
      writeFileSync(file, userData);
      const r = spawnSync("cloud-init", ["schema", "--config-file", file], { encoding: "utf8" });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}\n${userData}`);
    });
  }
});

test("user-data writes puppet config, fetches its keys once, and calls back", () => {
  const { userData, metaData } = renderCloudInit(sampleVars());
  const doc = load(userData) as {
    hostname: string;
    fqdn: string;
    ntp: { servers: string[] };
    apt: { http_proxy: string };
    write_files: Array<{ path: string; content: string; encoding: string; permissions: string }>;
    runcmd: string[][];
  };
  assert.equal(doc.hostname, "web-prod-1");
  assert.equal(doc.fqdn, "web-prod-1.example.com");
  assert.deepEqual(doc.ntp.servers, ["10.12.30.4"]);
  assert.equal(doc.apt.http_proxy, "http://10.12.30.3:3128");
  const files = new Map(
    doc.write_files.map((f) => [f.path, Buffer.from(f.content, "base64").toString("utf8")]),
  );
  assert.deepEqual([...files.keys()], ["/etc/puppet/puppet.conf"], "no key, no server.cfg");
  assert.match(files.get("/etc/puppet/puppet.conf")!, /^environment = production$/m);
  assert.ok(!userData.includes("s3cret") && !userData.includes("PRIVATE KEY"));
  const bootstrap = doc.runcmd.find((c) => c[0] === "sh")?.[2] ?? "";
  assert.match(
    bootstrap,
    /--proxy http:\/\/10\.12\.30\.3:3128 -H "X-Vsop-Installer-Nonce: \$n" -X POST \S+\/bootstrap\/A+ /,
  );
  assert.match(bootstrap, /; sh \/run\/vsop-bootstrap\.sh/);
  const callback = doc.runcmd.find((c) => c[0] === "curl");
  assert.ok(callback?.includes(sampleVars().provisioning.builtURL!));
  assert.deepEqual(load(metaData), {
    "instance-id": "web-prod-1.example.com",
    "local-hostname": "web-prod-1.example.com",
  });
  assert.ok(!renderCloudInit(minimalVars()).userData.includes("curl"));
});

/**
 * Runs `script` with sh against a local server whose first /bootstrap answer is lost (the
 * connection closed after the request arrived); returns the nonces the tries sent and whether
 * the fetched script ran. `dir` stands for /root and /run.
 */
async function runBootstrapFetch(script: (url: string, dir: string) => string) {
  const dir = mkdtempSync(join(tmpdir(), "vsop-bootstrap-"));
  const nonces: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    nonces.push(req.headers["x-vsop-installer-nonce"] as string | undefined);
    if (nonces.length === 1) return void req.socket.destroy();
    res.end(`echo ran > ${dir}/ran\n`);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const child = spawn(
      "sh",
      ["-c", script(`http://127.0.0.1:${port}/bootstrap/${"A".repeat(43)}`, dir)],
      {
        stdio: "ignore",
      },
    );
    const [code] = (await once(child, "exit")) as [number];
    return { code, nonces, ran: existsSync(join(dir, "ran")) };
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("the shipped kickstart and user-data retry a lost /bootstrap answer with the same nonce", async () => {
  const vars = (url: string) =>
    sampleVars({ provisioning: { ...sampleVars().provisioning, bootstrapURL: url } });
  const kickstart = await runBootstrapFetch((url, dir) => {
    const post = /^%post[^\n]*\n([\s\S]*?)^%end$/m.exec(renderKickstart(vars(url)))![1]!;
    // The fetch and the run of what it fetched, from the %post.
    const fetch = /^nonce=[\s\S]*?^sh \/root\/vsop-bootstrap\.sh$/m.exec(post)![0];
    return fetch.replaceAll("/root/", `${dir}/`);
  });
  const userData = await runBootstrapFetch((url, dir) => {
    const noProxy = { ...vars(url), services: { dns: "10.12.30.2" } };
    const doc = load(renderCloudInit(noProxy).userData) as {
      runcmd: string[][];
    };
    return doc.runcmd.find((c) => c[0] === "sh")![2]!.replaceAll("/run/", `${dir}/`);
  });
  for (const [what, r] of Object.entries({ kickstart, userData })) {
    assert.equal(r.nonces.length, 2, `${what}: tried again after the lost answer`);
    assert.match(r.nonces[0] ?? "", /^[0-9a-f]{32}$/, `${what}: 128 random bits`);
    assert.equal(r.nonces[1], r.nonces[0], `${what}: the same nonce on the retry`);
    assert.ok(r.ran, `${what}: ran the bootstrap it got`);
  }
  assert.notEqual(kickstart.nonces[0], userData.nonces[0], "a new nonce per install");
});

test("every rendered network-config has no default route", () => {
  for (const vars of [sampleVars(), minimalVars()]) {
    const { networkConfig } = renderCloudInit(vars);
    assertNoDefaultRoute(networkConfig);
    assert.ok(!/gateway|0\.0\.0\.0|routes/.test(networkConfig));
    const doc = load(networkConfig) as { version: number; ethernets: Record<string, unknown> };
    assert.equal(doc.version, 2);
  }
  const byMac = load(renderCloudInit(sampleVars()).networkConfig) as {
    ethernets: { ens192: { match: { macaddress: string }; addresses: string[] } };
  };
  assert.equal(byMac.ethernets.ens192.match.macaddress, "00:50:56:12:34:56");
  assert.deepEqual(byMac.ethernets.ens192.addresses, ["10.12.30.20/24"]);
});

test("cloud-init renders the network config to a static address without a gateway", () => {
  const { networkConfig } = renderCloudInit(sampleVars());
  withTempDir((dir) => {
    writeFileSync(join(dir, "network-config"), networkConfig);
    const out = join(dir, "out");
    const args = ["devel", "net-convert", "-p", join(dir, "network-config"), "-k", "yaml"];
    execFileSync("cloud-init", [...args, "-d", out, "-D", "rhel", "-O", "sysconfig"], {
      stdio: "pipe",
    });
    const ifcfg = readFileSync(join(out, "etc/sysconfig/network-scripts/ifcfg-ens192"), "utf8");
    assert.match(ifcfg, /^IPADDR=10\.12\.30\.20$/m);
    assert.match(ifcfg, /^NETMASK=255\.255\.255\.0$/m);
    assert.match(ifcfg, /^HWADDR=00:50:56:12:34:56$/m);
    assert.match(ifcfg, /^DNS1=10\.12\.30\.2$/m);
    assert.ok(!/GATEWAY|DEFROUTE=yes/.test(ifcfg), ifcfg);
    assert.deepEqual(
      readdirSync(join(out, "etc/sysconfig/network-scripts")).filter((f) => f.startsWith("route")),
      [],
    );
  });
});

test("assertNoDefaultRoute catches gateways, default routes and DHCP", () => {
  const base = renderCloudInit(sampleVars()).networkConfig;
  const doctored = [
    base.replace("    dhcp4: false\n", "    dhcp4: false\n    gateway4: 10.12.30.1\n"),
    base.replace(
      "    dhcp4: false\n",
      "    dhcp4: false\n    routes:\n      - to: 0.0.0.0/0\n        via: 10.12.30.1\n",
    ),
    base.replace(
      "    dhcp4: false\n",
      "    dhcp4: false\n    routes:\n      - to: default\n        via: 10.12.30.1\n",
    ),
    base.replace("    dhcp6: false\n", "    dhcp6: false\n    gateway6: fe80::1\n"),
    base.replace("    dhcp4: false\n", "    dhcp4: true\n"),
    "network:\n  version: 2\n  ethernets:\n    eth0:\n      gateway4: 10.0.0.1\n",
    "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n      - type: static\n        address: 10.12.30.20/24\n        gateway: 10.12.30.1\n",
    "version: 1\nconfig:\n  - type: route\n    destination: 0.0.0.0/0\n    gateway: 10.12.30.1\n",
  ];
  for (const yaml of doctored)
    assert.throws(() => assertNoDefaultRoute(yaml), NetworkConfigError, yaml);
  assert.throws(() => assertNoDefaultRoute("version: 3\n"), /unsupported version/);
  assert.throws(() => assertNoDefaultRoute("a: [\n"), /not valid YAML/);
  // DHCP that may not install routes, and specific routes, are fine.
  assertNoDefaultRoute(
    "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n    dhcp4-overrides: {use-routes: false}\n    routes:\n      - to: 10.99.0.0/16\n        via: 10.12.30.1\n",
  );
  // A class template that adds a gateway never leaves renderCloudInit.
  assert.throws(
    () => renderCloudInit(sampleVars(), { networkConfig: `${base}    gateway4: 10.12.30.1\n` }),
    NetworkConfigError,
  );
});

// ---------------------------------------------------------------- guestinfo

test("guestinfo keys decode back to the cloud-init files", () => {
  const files = renderCloudInit(sampleVars());
  const ec = guestinfoExtraConfig(files);
  assert.deepEqual(Object.keys(ec).sort(), [...GUESTINFO_KEYS].sort());
  assert.equal(ec["guestinfo.metadata.encoding"], "base64");
  assert.equal(ec["guestinfo.userdata.encoding"], "base64");
  const decode = (s: string) => Buffer.from(s, "base64").toString("utf8");
  assert.equal(decode(ec["guestinfo.userdata"]!), files.userData);
  const meta = JSON.parse(decode(ec["guestinfo.metadata"]!)) as Record<string, string>;
  assert.equal(meta["instance-id"], "web-prod-1.example.com");
  assert.equal(meta["local-hostname"], "web-prod-1.example.com");
  assert.equal(meta["network.encoding"], "base64");
  assert.equal(decode(meta.network!), files.networkConfig);
});

test("cloud-init's VMware datasource reads the guestinfo metadata and network", () => {
  const ec = guestinfoExtraConfig(renderCloudInit(sampleVars()));
  const env: Record<string, string> = { ...process.env } as Record<string, string>;
  // The datasource's container transport: guestinfo.x.y is read from VMX_GUESTINFO_X_Y.
  for (const [k, v] of Object.entries(ec)) env[`VMX_${k.toUpperCase().replaceAll(".", "_")}`] = v;
  const script = `
import json
from cloudinit.sources import DataSourceVMware as ds
from cloudinit.net import network_state
md = ds.process_metadata(ds.load_json_or_yaml(ds.guestinfo_envvar("metadata")))
ns = network_state.parse_net_config_data(md["network"]["config"])
ud = ds.guestinfo_envvar("userdata")
print(json.dumps({
  "instance": md["instance-id"],
  "userdata": ud.decode() if isinstance(ud, bytes) else ud,
  "interfaces": [{"name": i["name"], "subnets": i["subnets"]} for i in ns.iter_interfaces()],
  "routes": list(ns.iter_routes()),
}))
`;
  const out = execFileSync(cloudInitPython(), ["-c", script], { env, encoding: "utf8" });
  const r = JSON.parse(out) as {
    instance: string;
    userdata: string;
    interfaces: Array<{ name: string; subnets: Array<Record<string, unknown>> }>;
    routes: unknown[];
  };
  assert.equal(r.instance, "web-prod-1.example.com");
  assert.match(r.userdata, /^#cloud-config\n/);
  assert.deepEqual(r.routes, []);
  const [iface] = r.interfaces;
  assert.equal(iface?.name, "ens192");
  assert.equal(iface?.subnets[0]?.address, "10.12.30.20");
  assert.equal(iface?.subnets[0]?.prefix, 24);
  assert.equal(iface?.subnets[0]?.gateway, undefined);
});

// ---------------------------------------------------------------- tokens

test("tokens carry at least 128 random bits and are distinct", () => {
  const tokens = new Set(Array.from({ length: 1000 }, () => newToken()));
  assert.equal(tokens.size, 1000);
  for (const t of [...tokens].slice(0, 20)) {
    assert.ok(Buffer.from(t, "base64url").length * 8 >= 128);
    assert.match(t, /^[A-Za-z0-9_-]+$/);
    assert.ok(isWellFormedToken(t));
  }
  const t = newToken();
  assert.match(hashToken(t), /^[0-9a-f]{64}$/);
  assert.notEqual(hashToken(t), hashToken(newToken()));
  assert.equal(tokenLogId(t), hashToken(t).slice(0, 12));
  assert.ok(!isWellFormedToken("short"));
  assert.ok(!isWellFormedToken(`${t}/..`));
});

// ---------------------------------------------------------------- provisioning server

test("ProvisioningServer: routes, one-time tokens, no token in logs", async (t) => {
  const active = newToken();
  const viaGet = newToken();
  const failing = newToken();
  const early = newToken();
  // Like the operator: keyed by hash, state flips to used on /built.
  const store = new Map<
    string,
    { used: boolean; kickstart: string; keysFetched?: boolean; nonce?: string }
  >([
    [hashToken(active), { used: false, kickstart: "text\nnetwork --nodefroute\n" }],
    [hashToken(viaGet), { used: false, kickstart: "x" }],
  ]);
  const built: string[] = [];
  const lines: string[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(s) });
  const server = new ProvisioningServer({
    log,
    lookup: async (token): Promise<TokenState> => {
      if (token === failing) throw new Error(`secret store unavailable for ${token}`);
      if (token === early) return { kind: "notReady" };
      const e = store.get(hashToken(token));
      if (!e) return undefined;
      if (e.used) return { kind: "used" };
      return {
        kind: "active",
        kickstart: async () => e.kickstart,
        bootstrap: async (nonce) => {
          if (e.keysFetched && (!nonce || nonce !== e.nonce)) return undefined;
          e.keysFetched = true;
          e.nonce = nonce;
          return "#!/bin/sh\n# keys\n";
        },
      };
    },
    onBuilt: async (token) => {
      built.push(hashToken(token));
      store.get(hashToken(token))!.used = true;
    },
  });
  const { port } = await server.listen("127.0.0.1", 0);
  t.after(() => server.close());
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;

  const health = await fetch(url("/healthz"));
  assert.equal(health.status, 200);

  for (const p of [
    "/ks/" + newToken(),
    "/ks/",
    "/ks",
    "/ks/short",
    `/ks/${active}/x`,
    "/nope",
    "/built/%2e%2e",
  ])
    assert.equal((await fetch(url(p))).status, 404, p);

  const notYet = await fetch(url(`/ks/${early}`));
  assert.equal(notYet.status, 503, "install data not recorded yet: the installer retries");
  assert.equal((await fetch(url(`/built/${early}`), { method: "POST" })).status, 503);

  const ks = await fetch(url(`/ks/${active}`));
  assert.equal(ks.status, 200);
  assert.match(ks.headers.get("content-type") ?? "", /^text\/plain/);
  assert.equal(await ks.text(), "text\nnetwork --nodefroute\n");
  assert.equal((await fetch(url(`/ks/${active}?retry=1`))).status, 200, "refetch before /built");
  assert.equal(
    (await fetch(url(`/ks/${active}`), { headers: { "X-Vsop-Installer-Nonce": "short" } })).status,
    200,
    "the nonce is read for /bootstrap only",
  );
  assert.equal((await fetch(url(`/ks/${active}`), { method: "PUT" })).status, 405);

  assert.equal((await fetch(url(`/bootstrap/${active}`))).status, 405, "keys only by POST");
  const nonce = { "X-Vsop-Installer-Nonce": "0123456789abcdef0123456789abcdef" };
  for (const bad of ["short", "0123456789abcdef0123456789abcdef!"])
    assert.equal(
      (
        await fetch(url(`/bootstrap/${active}`), {
          method: "POST",
          headers: { "X-Vsop-Installer-Nonce": bad },
        })
      ).status,
      400,
      `a malformed nonce (${bad}) is refused before any key is made`,
    );
  assert.ok(!store.get(hashToken(active))!.keysFetched);
  const keys = await fetch(url(`/bootstrap/${active}`), { method: "POST", headers: nonce });
  assert.equal(keys.status, 200);
  assert.equal(await keys.text(), "#!/bin/sh\n# keys\n");
  assert.equal(keys.headers.get("cache-control"), "no-store");
  assert.equal(store.get(hashToken(active))!.nonce, nonce["X-Vsop-Installer-Nonce"], "passed on");
  const again = await fetch(url(`/bootstrap/${active}`), { method: "POST" });
  assert.equal(again.status, 410, "the key bundle is handed out once, but to its own installer");
  const retry = await fetch(url(`/bootstrap/${active}`), { method: "POST", headers: nonce });
  assert.equal(retry.status, 200);

  const done = await fetch(url(`/built/${active}`), { method: "POST", body: "ok" });
  assert.equal(done.status, 204);
  assert.deepEqual(built, [hashToken(active)]);
  assert.equal((await fetch(url(`/built/${active}`), { method: "POST" })).status, 410);
  assert.equal((await fetch(url(`/ks/${active}`))).status, 410);
  assert.equal((await fetch(url(`/bootstrap/${active}`), { method: "POST" })).status, 410);
  const viaGetRes = await fetch(url(`/built/${viaGet}`));
  assert.equal(viaGetRes.status, 405, "state changes are POST-only");
  assert.equal(viaGetRes.headers.get("allow"), "POST");
  assert.equal(built.length, 1);

  const big = await fetch(url(`/built/${newToken()}`), {
    method: "POST",
    body: Buffer.alloc(65 * 1024),
  });
  assert.equal(big.status, 413);
  // Without a length up front the server stops reading at the limit too.
  const chunks = Array.from({ length: 20 }, () => new Uint8Array(8 * 1024));
  const streamed = await fetch(url(`/built/${newToken()}`), {
    method: "POST",
    body: new ReadableStream({
      pull(c) {
        const next = chunks.pop();
        if (next) c.enqueue(next);
        else c.close();
      },
    }),
    duplex: "half",
  } as RequestInit);
  assert.equal(streamed.status, 413);

  const broken = await fetch(url(`/ks/${failing}`));
  assert.equal(broken.status, 500);
  assert.equal(await broken.text(), "internal error\n");

  const all = lines.join("");
  for (const token of [active, viaGet, failing]) {
    assert.ok(!all.includes(token), "token in the logs");
    assert.ok(all.includes(tokenLogId(token)), "token's log id in the logs");
  }
  assert.match(all, /secret store unavailable for <token [0-9a-f]{12}>/);
});

test("ProvisioningServer: an outage of the token store is 503 with Retry-After, other faults 500", async (t) => {
  class Outage extends Error {}
  const away = newToken();
  const broken = newToken();
  const lines: string[] = [];
  const server = new ProvisioningServer({
    log: pino({ level: "info" }, { write: (s: string) => void lines.push(s) }),
    lookup: async (token) => {
      if (token === broken) throw new Error(`bug while reading ${token}`);
      return { kind: "active", kickstart: async () => "ks", bootstrap: async () => "keys" };
    },
    onBuilt: async (token) => {
      if (token === away) throw new Outage(`store away while recording ${token}`);
    },
    unavailable: (err) => err instanceof Outage,
  });
  const { port } = await server.listen("127.0.0.1", 0);
  t.after(() => server.close());
  const post = (p: string) => fetch(`http://127.0.0.1:${port}${p}`, { method: "POST" });

  const retry = await post(`/built/${away}`);
  assert.equal(retry.status, 503, "an installer retries a callback that could not be recorded");
  assert.equal(retry.headers.get("retry-after"), "5");
  assert.equal(await retry.text(), "temporarily unavailable; retry shortly\n");
  const fault = await post(`/built/${broken}`);
  assert.equal(fault.status, 500);
  assert.equal(await fault.text(), "internal error\n");

  const logged = lines.map((l) => JSON.parse(l) as { level: number; msg: string });
  assert.ok(logged.some((l) => l.level === 40 && l.msg === "request failed; retry later"));
  assert.ok(logged.some((l) => l.level === 50 && l.msg === "request failed"));
  const all = lines.join("");
  for (const token of [away, broken]) assert.ok(!all.includes(token), "token in the logs");
  assert.match(all, /store away while recording <token [0-9a-f]{12}>/);
});

test("ProvisioningServer: a source over its request budget gets 429 with Retry-After", async (t) => {
  let lookups = 0;
  const server = new ProvisioningServer({
    lookup: async () => {
      lookups++;
      return undefined;
    },
    onBuilt: async () => undefined,
    rateLimit: { requests: 5, windowMs: 60_000 },
  });
  const { port } = await server.listen("127.0.0.1", 0);
  t.after(() => server.close());
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++)
    statuses.push((await fetch(`http://127.0.0.1:${port}/ks/${newToken()}`)).status);
  assert.deepEqual(statuses, [404, 404, 404, 404, 404, 429, 429, 429]);
  assert.equal(lookups, 5, "refused requests never reach the token store");
  const limited = await fetch(`http://127.0.0.1:${port}/ks/${newToken()}`);
  assert.equal(limited.headers.get("retry-after"), "10");
  assert.equal(
    (await fetch(`http://127.0.0.1:${port}/healthz`)).status,
    200,
    "probes are not limited",
  );
});

test("the bootstrap writes server.cfg with the broker login, the keys and the identity key", () => {
  const identity = generateKeyPairSync("ec", { namedCurve: "prime256v1" })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString();
  const base = sampleVars();
  const script = renderBootstrap({
    ...base,
    mcollective: { ...base.mcollective, identityPrivateKeyPem: identity },
  });
  assert.equal(spawnSync("bash", ["-n"], { input: script }).status, 0, "valid shell");
  const files: Record<string, string> = {};
  const re = /^cat > (\S+) <<'VSOP_EOF'\n([\s\S]*?)^VSOP_EOF$/gm;
  for (let m = re.exec(script); m; m = re.exec(script)) files[m[1]!] = m[2]!;
  const cfg = files["/etc/mcollective/server.cfg"]!;
  assert.match(cfg, /^identity = web-prod-1\.example\.com$/m);
  assert.match(cfg, /^plugin\.rabbitmq\.pool\.1\.password = s3cret: #not-a-comment$/m);
  assert.match(cfg, /^plugin\.ssl_serializer = marshal$/m);
  assert.match(cfg, /^plugin\.vsop\.identity_key = \/etc\/mcollective\/vsop\/identity\.pem$/m);
  assert.equal(files["/etc/mcollective/ssl/server_private.pem"], keys.privateKey);
  assert.equal(files["/etc/mcollective/ssl/clients/vsop.pem"], keys.publicKey);
  assert.equal(files["/etc/mcollective/vsop/identity.pem"], identity);
  assert.match(script, /^umask 077$/m, "written readable by root only");
});

test("the bootstrap writes csr_attributes.yaml (challenge, trusted facts); puppet.conf names the master and the file", () => {
  const base = sampleVars();
  const csrAttributes = csrAttributesYaml("ab".repeat(32), {
    pp_role: "web",
    pp_environment: "prod",
    pp_instance: "1",
  });
  const script = renderBootstrap({ ...base, puppet: { ...base.puppet, csrAttributes } });
  assert.equal(spawnSync("bash", ["-n"], { input: script }).status, 0, "valid shell");
  const files: Record<string, string> = {};
  const re = /^cat > (\S+) <<'VSOP_EOF'\n([\s\S]*?)^VSOP_EOF$/gm;
  for (let m = re.exec(script); m; m = re.exec(script)) files[m[1]!] = m[2]!;
  assert.equal(files["/etc/puppetlabs/puppet/csr_attributes.yaml"], csrAttributes);
  assert.ok(script.indexOf("umask 077") < script.indexOf("csr_attributes.yaml"), "root only");
  // Without it (the check render, a custom template) nothing is written.
  assert.ok(!renderBootstrap(base).includes("csr_attributes.yaml"));

  const ks = renderKickstart({ ...base, puppet: { ...base.puppet, serverPort: 8141 } });
  assert.match(ks, /^server = puppet\.example\.com$/m);
  assert.match(ks, /^serverport = 8141$/m);
  assert.match(ks, /^csr_attributes = \/etc\/puppetlabs\/puppet\/csr_attributes\.yaml$/m);
  assert.ok(!ks.includes("ab".repeat(32)), "the kickstart carries no challenge");
  assert.throws(
    () => renderBootstrap({ ...base, puppet: { ...base.puppet, csrAttributes: "a\u0000b\n" } }),
    /csrAttributes/,
  );
});

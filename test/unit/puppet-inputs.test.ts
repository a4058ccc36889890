// spec.puppet.environment and .tags reach the node as runonce inputs, which vsop's agent DDL
// (mcollective/agent/puppet.ddl) validates. A value the DDL refuses used to be accepted by the
// API server and fail only after the whole install (MCollectiveError on the first Puppet run);
// the CRDs now carry the DDL's rules, and this test keeps the two in step.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as yaml from "js-yaml";

const root = new URL("../../", import.meta.url).pathname;
const ddl = readFileSync(`${root}mcollective/agent/puppet.ddl`, "utf8");

/** An input's :validation regex and :maxlength in the DDL. */
function ddlInput(name: string): { re: RegExp; maxLength: number } {
  const block = new RegExp(`input :${name},([\\s\\S]*?)(?=\\n\\s*\\n)`).exec(ddl)?.[1] ?? "";
  const validation = /:validation\s*=>\s*'([^']+)'/.exec(block)?.[1];
  const maxLength = Number(/:maxlength\s*=>\s*(\d+)/.exec(block)?.[1]);
  assert.ok(validation && maxLength, `the DDL validates input ${name}`);
  return { re: new RegExp(validation), maxLength };
}

interface Prop {
  pattern?: string;
  maxLength?: number;
  items?: Prop;
  maxItems?: number;
  properties?: Record<string, Prop>;
  "x-kubernetes-validations"?: { rule: string }[];
}

function puppetSchema(file: string): Record<string, Prop> {
  const crd = yaml.load(readFileSync(`${root}crds/${file}`, "utf8")) as {
    spec: { versions: { schema: { openAPIV3Schema: Prop } }[] };
  };
  return crd.spec.versions[0]!.schema.openAPIV3Schema.properties!.spec!.properties!.puppet!
    .properties!;
}

const server = puppetSchema("virtualservers.provisioning.vsop.dev.yaml");
const klass = puppetSchema("virtualserverclasses.provisioning.vsop.dev.yaml");

test("environment: the CRDs refuse what the agent's DDL refuses", () => {
  const { re, maxLength } = ddlInput("environment");
  for (const prop of [server.environment!, klass.environment!]) {
    assert.equal(prop.maxLength, maxLength);
    const crd = new RegExp(prop.pattern!);
    for (const value of ["production", "web_2", "Staging", "prod-eu", "a b", "../etc", "ümlaut"])
      assert.equal(crd.test(value), re.test(value), value);
  }
  // The API server's patterns anchor the whole string; Ruby's ^...$ only a line.
  assert.equal(new RegExp(server.environment!.pattern!).test("prod\nevil"), false);
});

test("tags: each tag and the comma-joined list as the DDL validates them", () => {
  const { re, maxLength } = ddlInput("tags");
  const item = new RegExp(server.tags!.items!.pattern!);
  const rule = server.tags!["x-kubernetes-validations"]![0]!.rule;
  assert.equal(rule, `self.join(',').size() <= ${maxLength}`);
  // maxItems and the item maxLength only bound the rule's cost; the joined length decides.
  assert.ok((server.tags!.maxItems! + 1) * 2 - 1 > maxLength, "more tags never fit anyway");
  assert.ok(server.tags!.items!.maxLength! >= maxLength);
  const crdAccepts = (tags: string[]) =>
    tags.every((t) => item.test(t)) && tags.join(",").length <= maxLength;
  const samples = [
    ["ntp", "ssh"],
    ["role::web", "v1.2-x"],
    ["a b"],
    ["x,y"],
    ["ntp;reboot"],
    [""],
    Array.from({ length: 30 }, (_, i) => `tag${i}`),
  ];
  const ddlAccepts = (tags: string[]) =>
    re.test(tags.join(",")) && tags.join(",").length <= maxLength;
  for (const tags of samples) {
    // A tag holding a comma is two tags to the DDL; the CRD refuses it as one.
    if (tags.some((t) => t.includes(","))) assert.equal(crdAccepts(tags), false);
    else assert.equal(crdAccepts(tags), ddlAccepts(tags), JSON.stringify(tags));
  }
});

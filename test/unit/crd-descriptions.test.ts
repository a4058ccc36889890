// Every field of both CRDs explains itself in `kubectl explain`: the test walks each schema
// (spec and status, nested objects and array items) and names every property without a
// description, and every defaulted property whose description does not say its default.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as yaml from "js-yaml";

const root = new URL("../../", import.meta.url).pathname;
const CRDS = [
  "crds/virtualservers.provisioning.vsop.dev.yaml",
  "crds/virtualserverclasses.provisioning.vsop.dev.yaml",
];

interface Schema {
  type?: string;
  description?: string;
  default?: unknown;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
}

interface Crd {
  spec: {
    names: { kind: string };
    versions: { name: string; schema: { openAPIV3Schema: Schema } }[];
  };
}

/** Paths (e.g. .spec.puppet.tags) of every property below `schema`, with its schema. */
function properties(schema: Schema, path = ""): [string, Schema][] {
  const out: [string, Schema][] = [];
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    out.push([`${path}.${name}`, child]);
    out.push(...properties(child, `${path}.${name}`));
  }
  if (schema.items) out.push(...properties(schema.items, `${path}[]`));
  if (typeof schema.additionalProperties === "object")
    out.push(...properties(schema.additionalProperties, `${path}{}`));
  return out;
}

// apiextensions.k8s.io/v1 JSONSchemaProps fields (x-kubernetes-* are allowed as well).
const SCHEMA_KEYS = new Set([
  "type",
  "format",
  "description",
  "title",
  "default",
  "enum",
  "nullable",
  "example",
  "maximum",
  "minimum",
  "exclusiveMaximum",
  "exclusiveMinimum",
  "maxLength",
  "minLength",
  "pattern",
  "maxItems",
  "minItems",
  "uniqueItems",
  "multipleOf",
  "maxProperties",
  "minProperties",
  "required",
  "items",
  "properties",
  "additionalProperties",
  "allOf",
  "oneOf",
  "anyOf",
  "not",
  "externalDocs",
]);

// The API server refuses anything but name/generateName restrictions under metadata, and
// supplies ObjectMeta's own documentation for it.
const EXEMPT = new Set([".metadata"]);

for (const file of CRDS) {
  const crd = yaml.load(readFileSync(`${root}${file}`, "utf8")) as Crd;
  for (const version of crd.spec.versions) {
    const kind = `${crd.spec.names.kind} ${version.name}`;
    const schema = version.schema.openAPIV3Schema;
    const props = properties(schema).filter(([path]) => !EXEMPT.has(path));

    test(`${kind}: the schema walk sees spec and status, nested fields and array items`, () => {
      const paths = props.map(([p]) => p);
      assert.ok(paths.includes(".spec"), "no .spec");
      assert.ok(
        paths.some((p) => p.includes("[].")),
        "no property inside an array item",
      );
      if (crd.spec.names.kind === "VirtualServer") {
        assert.ok(paths.includes(".status.conditions[].reason"));
        assert.ok(paths.includes(".status.vm.nics[].macAddress"));
      } else {
        assert.ok(paths.includes(".spec.network.vlanCIDRs[].cidr"));
      }
    });

    test(`${kind}: every property has a description`, () => {
      assert.ok(schema.description, `${kind}: the object itself has no description`);
      const missing = props
        .filter(([, s]) => typeof s.description !== "string" || s.description.trim().length < 8)
        .map(([p]) => p);
      assert.deepEqual(
        missing,
        [],
        `${file}: properties without a description: ${missing.join(", ")}`,
      );
    });

    test(`${kind}: every schema node has only JSON-schema keys (no stray YAML keys)`, () => {
      // A comma in an unquoted flow-style description splits it into a stray key, which the
      // API server silently drops: `{ type: string, description: a, b }`.
      const stray = [["", schema] as [string, Schema], ...props].flatMap(([p, s]) =>
        Object.keys(s)
          .filter((k) => !SCHEMA_KEYS.has(k) && !k.startsWith("x-kubernetes-"))
          .map((k) => `${p || "."}: ${JSON.stringify(k)}`),
      );
      assert.deepEqual(stray, [], `${file}: unknown schema keys: ${stray.join(", ")}`);
    });

    test(`${kind}: every defaulted property names its default`, () => {
      const silent = props
        .filter(([, s]) => s.default !== undefined && !/\bdefault\b/i.test(s.description ?? ""))
        .map(([p, s]) => `${p} (default ${JSON.stringify(s.default)})`);
      assert.deepEqual(
        silent,
        [],
        `${file}: descriptions that do not say the default: ${silent.join(", ")}`,
      );
    });
  }
}

test("properties() names nested, array and map fields, and the walk fails on a gap", () => {
  const schema: Schema = {
    properties: {
      a: { description: "documented a", properties: { b: { type: "string" } } },
      l: { description: "documented l", items: { properties: { c: { type: "string" } } } },
      m: { description: "documented m", additionalProperties: { properties: { d: {} } } },
    },
  };
  const undocumented = properties(schema)
    .filter(([, s]) => !s.description)
    .map(([p]) => p);
  assert.deepEqual(undocumented, [".a.b", ".l[].c", ".m{}.d"]);
});

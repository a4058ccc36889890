import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

// The adapters to the outside world stay independent of each other and of the engine: each may
// use the API types, the shared errors and TLS/abort helpers and the logger, nothing else.
const ADAPTERS = ["vsphere", "mcollective", "naming", "provision"];
const adapterRules = ADAPTERS.map((name) => ({
  files: [`src/${name}/**/*.ts`],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        patterns: [
          {
            group: [...ADAPTERS.filter((a) => a !== name), "reconcile", "controller", "cli"].map(
              (dir) => `../${dir}/*`,
            ),
            message: `src/${name} is an adapter: it must not depend on other adapters or on the engine.`,
          },
        ],
      },
    ],
  },
}));

// The engine's parts by role: steps and boot methods reach vCenter, MCollective and the token
// store only through the ports the engine hands them (types from clients/, never the pools
// themselves); the client pools know nothing of the engine, its steps or boot methods.
const roleRules = [
  {
    files: ["src/reconcile/steps/**/*.ts", "src/reconcile/boot/**/*.ts"],
    rules: {
      "@typescript-eslint/no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["../clients/*"],
              allowTypeImports: true,
              message:
                "steps and boot methods use the clients through the engine's ports (types only).",
            },
          ],
        },
      ],
    },
  },
  {
    files: ["src/reconcile/clients/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["../engine/*", "../steps/*", "../boot/*"],
              message:
                "src/reconcile/clients holds client pools: they must not depend on the engine.",
            },
          ],
        },
      ],
    },
  },
];

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".stack/", "mcollective/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  ...adapterRules,
  ...roleRules,
);

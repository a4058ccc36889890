// The local stack's coordinates, from .stack/env (sourced by `make test-e2e`).
export function stackEnv(name: string): string {
  const v = process.env[name];
  if (!v)
    throw new Error(
      `${name} is not set: run the e2e tests through \`make test\` (it sources .stack/env)`,
    );
  return v;
}

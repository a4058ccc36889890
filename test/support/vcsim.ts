// A private vcsim, for tests and the bench that stop vCenter or load it hard without disturbing
// the stack's own. Same certificate, user and inventory as hack/stack-up.sh; start() may be
// called again after a kill, on the same port, to get a fresh, empty vCenter.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer } from "node:net";
import path from "node:path";
import { stackEnv } from "./env.js";
import { govc } from "./govc.js";
import { waitFor } from "./harness.js";

export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

export interface PrivateVcsim {
  port: number;
  url: string;
  password: string;
  /** GOVC_* settings for govc against this vcsim. */
  env: Record<string, string>;
  start(): Promise<ChildProcess>;
}

/** `extraArgs` go to vcsim as they are, e.g. ["-method-delay", "CreateVm:3000"] for the bench. */
export async function privateVcsim(extraArgs: string[] = []): Promise<PrivateVcsim> {
  const pki = path.join(stackEnv("VSOP_STACK_DIR"), "pki");
  const port = await freePort();
  const password = randomBytes(12).toString("hex");
  const username = stackEnv("GOVC_USERNAME");
  const url = `https://127.0.0.1:${port}/sdk`;
  const env = { GOVC_URL: url, GOVC_USERNAME: username, GOVC_PASSWORD: password };
  const args = [
    ...["-l", `127.0.0.1:${port}`],
    ...["-tlscert", path.join(pki, "vcsim.crt"), "-tlskey", path.join(pki, "vcsim.key")],
    ...["-username", username, "-password", password],
    ...["-dc", "1", "-cluster", "1", "-host", "2", "-standalone-host", "0"],
    ...["-vm", "1", "-ds", "1", "-pg", "1"],
    ...extraArgs,
  ];
  return {
    port,
    url,
    password,
    env,
    async start() {
      const proc = spawn(path.join(path.dirname(stackEnv("VSOP_GOVC")), "vcsim"), args, {
        stdio: "ignore",
      });
      await waitFor(`private vcsim on ${port}`, () => listening(port), 15_000);
      for (const pg of ["Boot-VLAN", "VLAN-10", "VLAN-30"])
        govc(
          ["dvs.portgroup.add", "-dvs", "DVS0", "-type", "earlyBinding", "-nports", "32", pg],
          env,
        );
      return proc;
    },
  };
}

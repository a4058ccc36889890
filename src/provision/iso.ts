// Small per-server ISO images: a cloud-init NoCloud seed ("cidata") or an anaconda kickstart
// disk ("OEMDRV", found automatically when it holds ks.cfg). Built by xorriso in a private
// temporary directory, which is always removed; the container's only writable place is /tmp.
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export type IsoVolumeId = "cidata" | "OEMDRV";

export interface IsoOptions {
  volumeId: IsoVolumeId;
  /** Path inside the image → content, e.g. { "user-data": "...", "meta-data": "..." }. */
  files: Record<string, string | Buffer>;
  /** Base for the temporary directory; default os.tmpdir(). */
  tmpDir?: string;
  /** Kill xorriso after this long; default 30 s. */
  timeoutMs?: number;
  /** Default "xorriso" from PATH. */
  xorriso?: string;
}

export class IsoBuildError extends Error {
  override name = "IsoBuildError";
  constructor(
    message: string,
    readonly exitCode: number | null = null,
    readonly stderrTail = "",
    readonly timedOut = false,
  ) {
    super(stderrTail ? `${message}: ${stderrTail}` : message);
  }
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const STDERR_TAIL = 2048;

export async function buildIso(options: IsoOptions): Promise<Buffer> {
  const { volumeId, files } = options;
  if (volumeId !== "cidata" && volumeId !== "OEMDRV")
    throw new IsoBuildError(`volume id ${JSON.stringify(volumeId)} is not cidata or OEMDRV`);
  const names = Object.keys(files);
  if (names.length === 0) throw new IsoBuildError("no files to put on the ISO");
  for (const name of names)
    if (!name.split("/").every((s) => SEGMENT.test(s)))
      throw new IsoBuildError(`file name ${JSON.stringify(name)} is not a plain relative path`);

  const work = await mkdtemp(join(options.tmpDir ?? tmpdir(), "vsop-iso-"));
  try {
    const root = join(work, "root");
    await mkdir(root, { mode: 0o700 });
    for (const name of names) {
      const path = join(root, name);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, files[name]!, { mode: 0o600 });
    }
    const out = join(work, "image.iso");
    // -r: Rock Ridge with owner root and world-readable modes; -J: Joliet for Windows readers.
    await run(
      options.xorriso ?? "xorriso",
      ["-as", "mkisofs", "-quiet", "-V", volumeId, "-r", "-J", "-o", out, root],
      options.timeoutMs ?? 30_000,
    );
    return await readFile(out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let tail = "";
    let timedOut = false;
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      tail = (tail + chunk).slice(-STDERR_TAIL);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new IsoBuildError(
          err.code === "ENOENT" ? `${cmd} not found (install xorriso)` : `${cmd}: ${err.message}`,
        ),
      );
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stderr = tail.trim();
      if (timedOut)
        reject(new IsoBuildError(`${cmd} did not finish in ${timeoutMs} ms`, null, stderr, true));
      else if (code !== 0)
        reject(new IsoBuildError(`${cmd} failed (${signal ?? `exit ${code}`})`, code, stderr));
      else resolve();
    });
  });
}

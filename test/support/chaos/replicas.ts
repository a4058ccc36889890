// Two operator replicas with leader election, kept running as a Deployment would: whatever ends
// one (our SIGKILL, a lost lease, a crash) is recorded and the replica is started again.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { metric, scrape, type Operator } from "../harness.js";

export type ExitCause = "killed" | "leaseLost" | "stopped" | "crash";

export interface Exit {
  replica: string;
  incarnation: number;
  cause: ExitCause;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  logFile: string;
  /** Last lines of its log, for a crash report. */
  tail: string;
}

/** Output lines that are not log records (a stack trace, a Node warning). */
export function strayLines(logFile: string): string[] {
  return readFileSync(logFile, "utf8")
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("{"));
}

export class Replica {
  op: Operator | undefined;
  incarnation = 0;
  private killing = false;
  private stopping = false;
  private readonly logs: string[] = [];

  constructor(
    readonly name: string,
    private readonly launch: (name: string) => Operator,
    private readonly onExit: (e: Exit) => void,
  ) {}

  get logFiles(): string[] {
    return this.logs;
  }

  start(): void {
    this.incarnation++;
    this.killing = false;
    const op = this.launch(`${this.name}-${this.incarnation}`);
    this.op = op;
    this.logs.push(op.logFile);
    const incarnation = this.incarnation;
    op.proc.once("exit", (code, signal) => {
      const text = readFileSync(op.logFile, "utf8");
      const cause: ExitCause =
        this.killing && signal === "SIGKILL"
          ? "killed"
          : this.stopping
            ? code === 0
              ? "stopped"
              : "crash"
            : code === 1 && text.includes('"msg":"leadership lost: exiting at once"')
              ? "leaseLost"
              : "crash";
      this.onExit({
        replica: this.name,
        incarnation,
        cause,
        code,
        signal,
        at: Date.now(),
        logFile: op.logFile,
        tail: text.split("\n").slice(-15).join("\n"),
      });
      // As a Deployment would: started again at once after our kill, after a second otherwise.
      if (!this.stopping)
        setTimeout(() => this.stopping || this.start(), cause === "killed" ? 0 : 1000);
    });
  }

  running(): boolean {
    const p = this.op?.proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }

  /** Whether it runs the controller now (its vsop_leader gauge). */
  async leading(): Promise<boolean> {
    if (!this.running()) return false;
    try {
      const { body } = await scrape(this.op!.metricsPort);
      return metric(body, "vsop_leader") === 1;
    } catch {
      return false;
    }
  }

  async rssBytes(): Promise<number | undefined> {
    if (!this.running()) return undefined;
    const { body } = await scrape(this.op!.metricsPort);
    return metric(body, "process_resident_memory_bytes");
  }

  kill(): void {
    if (!this.running()) return;
    this.killing = true;
    this.op!.proc.kill("SIGKILL");
  }

  /** SIGTERM, for good; resolves with the exit code. */
  async stop(): Promise<number | null> {
    this.stopping = true;
    if (!this.op) return null;
    return this.op.stop("SIGTERM");
  }
}

/** The replica that leads now, waiting up to `timeoutMs` for one. */
export async function leader(replicas: Replica[], timeoutMs: number): Promise<Replica | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const r of replicas) if (await r.leading()) return r;
    if (Date.now() > deadline) return undefined;
    await sleep(200);
  }
}

// Runs a real parleyd for the integration test: built from this repository
// (or PARLEYD_BIN), on free loopback ports, with a temporary data directory;
// restart() stops it and starts a new process on the same ports and data.

import { spawn, execFileSync, type ChildProcess } from "child_process";
import { mkdtempSync, rmSync, openSync, closeSync, readFileSync } from "fs";
import net from "net";
import os from "os";
import path from "path";

export const mobileDir = path.resolve(__dirname, "..");
export const repoRoot = path.resolve(mobileDir, "../..");

/** freePort asks the kernel for an unused TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** waitFor polls cond until it holds or the timeout passes. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export class Parleyd {
  readonly tmp: string;
  readonly dataDir: string;
  bin = "";
  httpPort = 0;
  grpcPort = 0;
  private proc: ChildProcess | null = null;
  private starts = 0;

  constructor(private readonly extraArgs: string[] = []) {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), "parley-mobile-"));
    this.dataDir = path.join(this.tmp, "data");
  }

  get baseURL(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** build compiles parleyd into the temp dir (skipped when PARLEYD_BIN is set). */
  build(): void {
    if (process.env.PARLEYD_BIN) {
      this.bin = process.env.PARLEYD_BIN;
      return;
    }
    this.bin = path.join(this.tmp, "parleyd");
    execFileSync("go", ["build", "-o", this.bin, "./server/cmd/parleyd"], { cwd: repoRoot, stdio: "inherit" });
  }

  async start(): Promise<void> {
    if (!this.httpPort) {
      this.httpPort = await freePort();
      this.grpcPort = await freePort();
    }
    this.starts += 1;
    const logPath = path.join(this.tmp, `parleyd-${this.starts}.log`);
    const log = openSync(logPath, "w");
    const proc = spawn(
      this.bin,
      [
        "--data-dir", this.dataDir,
        "--grpc-addr", `127.0.0.1:${this.grpcPort}`,
        "--http-addr", `127.0.0.1:${this.httpPort}`,
        "--metrics-addr", "off",
        "--log-level", "debug",
        ...this.extraArgs,
      ],
      { cwd: this.tmp, stdio: ["ignore", log, log] },
    );
    closeSync(log);
    this.proc = proc;
    let exited: number | null = null;
    proc.once("exit", (code) => {
      exited = code ?? -1;
    });
    try {
      await until(async () => {
        if (exited !== null) throw new Error(`parleyd exited with ${exited}:\n${readFileSync(logPath, "utf8")}`);
        return tcpOpen(this.httpPort);
      }, "parleyd to listen", 30_000);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** stop sends SIGTERM (graceful) and waits for the exit; SIGKILL after 15 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => p.kill("SIGKILL"), 15_000);
      p.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      p.kill("SIGTERM");
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** logs returns every log this run wrote (for failure messages). */
  logs(): string {
    let out = "";
    for (let i = 1; i <= this.starts; i++) {
      try {
        out += `--- parleyd-${i}.log\n${readFileSync(path.join(this.tmp, `parleyd-${i}.log`), "utf8")}`;
      } catch {
        // not written
      }
    }
    return out;
  }

  async cleanup(): Promise<void> {
    await this.stop();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

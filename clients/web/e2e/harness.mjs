// Test harness for the browser end-to-end tests: builds parleyd from the
// repository, runs it on free ports with a temporary data directory (and
// restarts it on the same ports and data), and launches Debian's headless
// Chromium through playwright-core. Nothing is downloaded.

import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { createWriteStream, existsSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const repoRoot = path.resolve(webDir, "../..");
export const resultsDir = path.join(webDir, "test-results");

/** chromiumPath is Debian's chromium unless CHROMIUM overrides it. */
export const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** freePort asks the kernel for an unused TCP port on 127.0.0.1. */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * serverName is the process name (comm) of the tests' parleyd. It is not
 * "parleyd": this machine is shared, and scripts that stop "their" server
 * by name (pkill parleyd, pkill -x 'parleyd.*', killall parleyd) would
 * send SIGTERM to the tests' server too, which then shuts down gracefully
 * in the middle of a test (the page shows "Reconnecting… — server shutting
 * down"). Like the free ports and the temporary data directory, the name
 * keeps the tests' server to the tests. At most 15 characters (the
 * kernel's comm).
 */
export const serverName = "e2e-chat-server";

/**
 * buildServer compiles parleyd into a temp dir (or links to PARLEYD_BIN)
 * under the name serverName and returns the binary's path.
 */
export async function buildServer(tmp) {
  const bin = path.join(tmp, serverName);
  if (process.env.PARLEYD_BIN) {
    // A symlink gives the process its name (the kernel takes comm from the
    // path that was executed).
    await symlink(path.resolve(process.env.PARLEYD_BIN), bin);
    return bin;
  }
  await run("go", ["build", "-o", bin, "./server/cmd/parleyd"], { cwd: repoRoot, maxBuffer: 16 << 20 });
  return bin;
}

/** tempDir makes a fresh temporary directory. */
export function tempDir(prefix = "parley-e2e-") {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** parleyd runs a subcommand of the binary (e.g. user add) and returns stdout. */
export async function parleyd(bin, args) {
  const { stdout } = await run(bin, args, { cwd: repoRoot });
  return stdout.trim();
}

/**
 * ParleyServer is one running parleyd. restart() stops it and starts a new
 * process on the same ports and data directory.
 */
export class ParleyServer {
  constructor({ bin, dataDir, httpPort, grpcPort, logName = "parleyd", extraArgs = [] }) {
    Object.assign(this, { bin, dataDir, httpPort, grpcPort, logName, extraArgs });
    this.proc = null;
    this.starts = 0;
    this.stopping = false;
    /** lost says why the server ended without stop(), once it has. */
    this.lost = null;
  }

  /**
   * launch builds parleyd into tmp and starts it on free ports, with its
   * data in tmp/data.
   */
  static async launch(tmp, { logName, extraArgs } = {}) {
    const server = new ParleyServer({
      bin: await buildServer(tmp),
      dataDir: path.join(tmp, "data"),
      httpPort: await freePort(),
      grpcPort: await freePort(),
      logName,
      extraArgs,
    });
    await server.start();
    return server;
  }

  /**
   * problem is null while the server runs as the test left it, or says
   * that it ended (or began a shutdown) without stop(): something outside
   * the test signalled it. Tests put it in their failure messages.
   */
  problem() {
    return this.lost;
  }

  get baseURL() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get grpcAddr() {
    return `127.0.0.1:${this.grpcPort}`;
  }

  async start() {
    await mkdir(resultsDir, { recursive: true });
    this.starts += 1;
    const log = createWriteStream(path.join(resultsDir, `${this.logName}-${this.starts}.log`));
    const args = [
      "--grpc-addr", this.grpcAddr,
      "--http-addr", `127.0.0.1:${this.httpPort}`,
      "--metrics-addr", "off",
      "--data-dir", this.dataDir,
      "--allowed-origins", this.baseURL,
      "--log-level", "debug",
      ...this.extraArgs,
    ];
    const proc = spawn(this.bin, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    proc.stdout.pipe(log, { end: false });
    proc.stderr.pipe(log, { end: false });
    proc.once("exit", () => log.end());
    this.proc = proc;
    this.lost = null;
    const logFile = `test-results/${this.logName}-${this.starts}.log`;
    // parleyd logs "shutting down" when SIGTERM or SIGINT stops it; the
    // page hears a shutdown notice at once, the exit comes after a drain.
    let partial = "";
    proc.stderr.on("data", (chunk) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop();
      if (this.stopping || this.lost || !lines.some((l) => l.includes('msg="shutting down"'))) return;
      this.lost = `${this.logName} began shutting down at ${new Date().toISOString()} although the test did not stop it: something outside the test signalled it (a script stopping "parleyd" by name?); see ${logFile}`;
      console.error(`harness: ${this.lost}`);
    });
    proc.once("exit", (code, signal) => {
      if (this.stopping || this.lost) return;
      this.lost = `${this.logName} exited at ${new Date().toISOString()} with ${signal ?? `code ${code}`} although the test did not stop it; see ${logFile}`;
      console.error(`harness: ${this.lost}`);
    });
    const exited = once(proc, "exit").then(([code]) => {
      throw new Error(`parleyd exited early with ${code}; see test-results/${this.logName}-${this.starts}.log`);
    });
    await Promise.race([waitForHTTP(this.baseURL, 30_000), exited]);
    exited.catch(() => {});
  }

  /** stop sends SIGTERM (graceful stop) and waits for the exit. */
  async stop(signal = "SIGTERM") {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = once(p, "exit");
    this.stopping = true;
    p.kill(signal);
    const timer = setTimeout(() => p.kill("SIGKILL"), 15_000);
    await done;
    clearTimeout(timer);
    this.stopping = false;
    this.proc = null;
  }

  async restart() {
    await this.stop();
    await this.start();
  }
}

async function waitForHTTP(url, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url + "/", { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      last = new Error(`HTTP ${res.status}`);
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`parleyd did not answer on ${url}: ${last?.message}`);
}

/** launchBrowser starts headless Chromium (never downloads one). */
export async function launchBrowser() {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: apt-get install -y chromium (or set CHROMIUM)`);
  }
  return chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
}

/**
 * newUserPage opens a browser context (its own storage, like another person
 * on another machine) with console and page errors collected.
 */
export async function newUserPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`${name} console: ${msg.text()}`);
  });
  return { context, page, errors, name };
}

let shot = 0;

/** screenshot saves a numbered PNG under test-results/. */
export async function screenshot(page, name) {
  await mkdir(resultsDir, { recursive: true });
  shot += 1;
  const file = path.join(resultsDir, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** writeArtifact saves a text artifact under test-results/. */
export async function writeArtifact(name, text) {
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, name), text);
}

export async function removeDir(dir) {
  await rm(dir, { recursive: true, force: true });
}

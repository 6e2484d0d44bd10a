/** `ladder` command line: `serve` runs a hub; `publish` and `tail` talk to a running one. */
import { readFileSync } from "node:fs";
import { BenchFailure, runBenchCommand } from "./bench.js";
import { REMOTE_HELP, runPublish, runTail, RuntimeError } from "./remote.js";
import { argsError, columns, parseServeArgs, resolveSettings, SettingsError, settingsHelp } from "./settings.js";

const USAGE = `ladder — a realtime delivery hub (polling, long-polling, SSE, WebSocket)

Usage:
${columns([
  ["ladder serve [options]", "run a hub (in memory, or one of many over --engine redis://… or nats://…)"],
  ["ladder publish <channel> <json> [options]", "publish one message to a running hub"],
  ["ladder tail [channel…] [options]", "print messages as they arrive, one per line: id channel data"],
  ["ladder bench --url U [options]", "measure every delivery pattern against a hub (ladder bench --help)"],
  ["ladder --help | --version", ""],
])}

Options of publish and tail:
${columns(REMOTE_HELP)}

Options of serve:
${settingsHelp()}
SIGTERM or SIGINT drains gracefully.

Mistakes in the command line or settings exit with code 2, failures at run time with 1 (LADDER_DEBUG=1
prints the stack of unexpected errors).
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

async function runServe(args: string[]): Promise<void> {
  const values = parseServeArgs(args);
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const settings = resolveSettings(values, process.env);
  // Loaded only to serve: the other commands and every settings error start without the server's modules.
  const { runServe: start } = await import("./serve.js");
  await start(settings);
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        return await runServe(rest);
      case "publish":
        return rest.includes("--help") || rest.includes("-h") ? void process.stdout.write(USAGE) : await runPublish(rest);
      case "tail":
        return rest.includes("--help") || rest.includes("-h") ? void process.stdout.write(USAGE) : await runTail(rest);
      case "bench":
        return await runBenchCommand(rest);
      case "--version":
      case "-v":
        process.stdout.write(`${version()}\n`);
        return;
      case undefined:
      case "--help":
      case "-h":
      case "help":
        process.stdout.write(USAGE);
        return;
      default:
        throw new SettingsError(`unknown command ${JSON.stringify(command)}; the commands are serve, publish, tail and bench (ladder --help)`);
    }
  } catch (error) {
    // One line for the person at the terminal; the stack only when asked for.
    const said = argsError(error, command ?? "");
    const usage = said instanceof SettingsError;
    const known = usage || said instanceof RuntimeError || said instanceof BenchFailure;
    process.stderr.write(`ladder: ${known ? "" : "unexpected error: "}${said.message ?? String(said)}\n`);
    if (!known && process.env.LADDER_DEBUG) process.stderr.write(`${said.stack}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}

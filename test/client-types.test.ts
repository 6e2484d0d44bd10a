/**
 * The client's types: test/fixtures/typed-client.ts compiles under tsc --strict with every
 * `@ts-expect-error` used, and without those markers each marked line is an error (so none passes vacuously).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const FIXTURE = join(ROOT, "test", "fixtures", "typed-client.ts");
const MARKER = "// @ts-expect-error";

function diagnose(text: string): readonly ts.Diagnostic[] {
  const options: ts.CompilerOptions = { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, lib: ["lib.es2023.d.ts", "lib.dom.d.ts"], skipLibCheck: true, types: [] };
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version, ...rest) => (name === FIXTURE ? ts.createSourceFile(name, text, version) : read(name, version, ...rest));
  const program = ts.createProgram([FIXTURE], options, host);
  return ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === FIXTURE);
}

const lineOf = (d: ts.Diagnostic): number => d.file!.getLineAndCharacterOfPosition(d.start!).line;
const show = (ds: readonly ts.Diagnostic[]): string => ds.map((d) => `${lineOf(d) + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`).join("\n");

test("typed channels compile as declared, and each marked misuse is an error", () => {
  const text = readFileSync(FIXTURE, "utf8");
  const clean = diagnose(text);
  assert.equal(clean.length, 0, show(clean));
  const lines = text.split("\n");
  const marked = lines.flatMap((line, i) => (line.trim().startsWith(MARKER) ? [i + 1] : []));
  assert.ok(marked.length >= 7, `markers: ${marked.length}`);
  // The marker lines become blank: line numbers stay, and every marked line must now fail.
  const bare = diagnose(lines.map((line) => (line.trim().startsWith(MARKER) ? "" : line)).join("\n"));
  const failing = new Set(bare.map(lineOf));
  for (const line of marked) assert.ok(failing.has(line), `line ${line + 1} compiles without its marker: ${lines[line]}\n${show(bare)}`);
  assert.equal(bare.length, marked.length, show(bare));
});

/**
 * The one way the tests get a browser: Debian's Chromium at /usr/bin/chromium, driven by playwright-core
 * through `executablePath` (nothing here downloads a browser), and the one skip rule — without it a test
 * skips loudly, except under CI=true, where a missing browser is a failure.
 *
 * A test file that needs only the browser calls {@link useChromium} once; one that starts more with it
 * (client-browser) launches in its own `before` hook and asks {@link requireBrowser} in each test:
 *
 *   const chromiumFor = useChromium("my tests");
 *   test("…", async (t) => { const b = chromiumFor(t); if (!b) return; … });
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, type TestContext } from "node:test";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";
export const CHROMIUM_ARGS: readonly string[] = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-gpu",
  "--no-first-run",
];
export const HAVE_CHROMIUM = existsSync(CHROMIUM);
export const IN_CI = process.env.CI === "true";
/** How long a launch may take before the `before` hook fails. */
const LAUNCH_TIMEOUT_MS = 20_000;

/**
 * True when Chromium is installed. Otherwise warns once, loudly, naming `suite` (e.g. "demo page test"),
 * and returns false; the tests themselves then skip or, under CI=true, fail through {@link requireBrowser}.
 */
export function chromiumAvailable(suite: string): boolean {
  if (HAVE_CHROMIUM) return true;
  console.warn(`\n*** ${suite}: ${CHROMIUM} is missing — ${IN_CI ? "FAILING (CI=true)" : "SKIPPING"} ***\n`);
  return false;
}

/** Debian's Chromium, headless; null (after the loud warning) when it is not installed. */
export async function launchChromium(suite: string): Promise<Browser | null> {
  if (!chromiumAvailable(suite)) return null;
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS], timeout: LAUNCH_TIMEOUT_MS });
}

/**
 * The skip rule, for a test that needs what its file's `before` hook set up (the browser, and whatever
 * else the file starts with it): returns `env` when there is one; otherwise skips the test with the
 * reason and returns null — or, under CI=true, fails it.
 */
export function requireBrowser<T>(t: TestContext, env: T | null | undefined): T | null {
  if (env !== null && env !== undefined) return env;
  const why = `${CHROMIUM} is not installed; the browser tests need Debian's chromium package (apt-get install chromium)`;
  if (IN_CI) assert.fail(`CI=true and ${why}`);
  t.skip(`SKIPPED: ${why}`);
  return null;
}

/**
 * Launches Chromium in a `before` hook of the calling file and closes it in an `after` hook; returns what
 * each test calls for the browser, with the skip rule of {@link requireBrowser} applied.
 */
export function useChromium(suite: string): (t: TestContext) => Browser | null {
  let browser: Browser | null = null;
  before(async () => {
    browser = await launchChromium(suite);
  });
  after(async () => {
    await browser?.close();
    browser = null;
  });
  return (t) => requireBrowser(t, browser);
}

/**
 * A headless browser for tests of pages the project serves (`colo serve`'s
 * status page): Debian's `chromium` (scripts/setup-host.sh installs it)
 * driven by puppeteer-core (pinned, a devDependency; it downloads no
 * browser). One helper: launch, open a URL, wait for a condition, read the
 * DOM with an expression, take a screenshot, close.
 *
 * Flags: headless, no sandbox when root (Chromium refuses to run as root
 * with it), and no background networking, component updates, sync or
 * QUIC: this machine's network is closed, and without them Chromium keeps
 * trying to reach Google's hosts. The browser talks to puppeteer over a
 * pipe (no debugging port), so it ends with the test process; close()
 * bounds its own wait and kills the browser's process by pid after it.
 *
 * Expressions are strings evaluated in the page (this project compiles
 * without the DOM's types): each returns JSON-able data, checked by the
 * test.
 */
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";

/** Debian's chromium package; COLO_CHROMIUM names another binary. */
export const CHROMIUM = process.env.COLO_CHROMIUM ?? "/usr/bin/chromium";

const QUIET_NETWORK_FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps"];

/** Why a browser test cannot run here, or false. Under CI=true a missing chromium fails the test instead of skipping it. */
export function browserSkipReason(): string | false {
  if (/^(true|1)$/i.test(process.env.CI ?? "")) return false;
  return existsSync(CHROMIUM) ? false : `needs ${CHROMIUM} (Debian chromium; scripts/setup-host.sh installs it)`;
}

export interface OpenedPage {
  /** Evaluates `expression` in the page; its value as JSON-able data. */
  evaluate(expression: string): Promise<unknown>;
  /** Waits until `expression` is truthy in the page. */
  waitFor(expression: string, timeoutMs?: number): Promise<void>;
  /** A PNG of the whole page at `path` (its folder is made). */
  screenshot(path: string): Promise<void>;
  /** Errors the page logged or threw (console.error, uncaught exceptions, failed requests). */
  readonly errors: string[];
}

export class HeadlessBrowser {
  private constructor(private readonly browser: Browser) {}

  static async launch(opts: { executablePath?: string; timeoutMs?: number } = {}): Promise<HeadlessBrowser> {
    const root = process.getuid?.() === 0;
    const browser = await puppeteer.launch({
      executablePath: opts.executablePath ?? CHROMIUM,
      headless: true,
      pipe: true,
      timeout: opts.timeoutMs ?? 30_000,
      protocolTimeout: opts.timeoutMs ?? 30_000,
      args: [...(root ? ["--no-sandbox"] : []), ...QUIET_NETWORK_FLAGS],
    });
    return new HeadlessBrowser(browser);
  }

  /** Opens `url` in a new tab (1280×900) and waits for it to load. */
  async open(url: string, timeoutMs = 15_000): Promise<OpenedPage> {
    const page: Page = await this.browser.newPage();
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`page: ${e instanceof Error ? e.message : String(e)}`));
    page.on("requestfailed", (r) => errors.push(`request ${r.url()}: ${r.failure()?.errorText ?? "failed"}`));
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    return {
      errors,
      evaluate: (expression) => page.evaluate(expression) as Promise<unknown>,
      waitFor: async (expression, ms = timeoutMs) => {
        await page.waitForFunction(expression, { timeout: ms, polling: 50 });
      },
      screenshot: async (path) => {
        mkdirSync(dirname(path), { recursive: true });
        await page.screenshot({ path: path as `${string}.png`, fullPage: true });
      },
    };
  }

  /** Closes the browser: within `timeoutMs`, else its process is killed. */
  async close(timeoutMs = 5000): Promise<void> {
    const proc = this.browser.process();
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      this.browser.close().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!closed && proc?.pid !== undefined && proc.exitCode === null) process.kill(proc.pid, "SIGKILL");
  }
}

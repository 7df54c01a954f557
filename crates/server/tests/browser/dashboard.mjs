// Drives the dashboard in headless Chromium for tests/browser.rs.
//
// Usage: node dashboard.mjs CHROMIUM URL ARTIFACT_DIR
//
// It talks to the Rust test over stdio, one line each way per step:
//   prints "loaded"           the page shows every backend   -> waits for "updated"
//   prints "shown"            the page shows the new load    -> (no answer needed)
//   prints "stop-admin"       screenshots are saved          -> waits for "admin-stopped"
//   prints "done"             the unreachable banner is shown; exits 0
// Any failure prints "error: ..." and exits 1. Nothing here waits without a deadline.

import { createInterface } from "node:readline";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [executablePath, url, artifacts] = process.argv.slice(2);
const STEP_MS = 8000;

const lines = createInterface({ input: process.stdin });
const queued = [];
const waiting = [];
lines.on("line", (line) => (waiting.length ? waiting.shift()(line) : queued.push(line)));

function expectLine(expected) {
  const next = queued.length ? Promise.resolve(queued.shift()) : new Promise((resolve) => waiting.push(resolve));
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`no "${expected}" from the test`)), STEP_MS));
  return Promise.race([next, timeout]).then((line) => {
    if (line.trim() !== expected) throw new Error(`expected "${expected}" from the test, got "${line}"`);
  });
}

function say(line) {
  process.stdout.write(line + "\n");
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const rowText = (page, id, field) =>
  page.locator(`[data-service="default"] tr[data-backend-id="${id}"] [data-field="${field}"]`);
const v2Text = (page, field) => page.locator(`[data-service="search"] tr[data-backend-id] [data-field="${field}"]`);

async function main() {
  mkdirSync(artifacts, { recursive: true });
  for (const name of ["dashboard.png", "dashboard-phone.png", "dashboard-unreachable.png", "dashboard-failure.png"]) {
    rmSync(join(artifacts, name), { force: true });
  }
  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  try {
    await steps(page);
  } catch (error) {
    // A picture of what the page showed makes a failure easy to read.
    await page.screenshot({ path: join(artifacts, "dashboard-failure.png"), fullPage: true }).catch(() => {});
    throw error;
  }
}

async function steps(page) {
  page.setDefaultTimeout(STEP_MS);
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") problems.push(`${message.type()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));
  const foreign = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(url) && !request.url().startsWith("data:")) foreign.push(request.url());
  });

  await page.goto(url);
  await page.locator('[data-service="default"] tr[data-backend-id]').nth(1).waitFor();
  const rows = await page.locator('[data-service="default"] tr[data-backend-id]').count();
  check(rows === 2, `expected 2 backend rows, found ${rows}`);
  await waitForText(rowText(page, 1, "reported"), "40 %");
  await waitForText(rowText(page, 2, "reported"), "60 %");
  await waitForText(rowText(page, 1, "address"), "10.0.0.1:7001");
  await waitForText(rowText(page, 1, "state"), "ready");
  await waitForText(rowText(page, 1, "protocol"), "legacy");
  // The v2 backend of the second service, in its own section.
  await waitForText(v2Text(page, "protocol"), "v2");
  await waitForText(v2Text(page, "address"), "[2001:db8::7]:9000");
  await waitForText(v2Text(page, "cpu"), "50.5 %");
  await waitForText(v2Text(page, "weight"), "200");
  await waitForText(v2Text(page, "state"), "reports draining");
  say("loaded");

  await expectLine("updated");
  await waitForText(rowText(page, 1, "reported"), "85 %");
  say("shown");

  // Let the charts gather a few samples, then check both draw a line per backend.
  await page.waitForFunction(
    () => document.querySelectorAll('[data-service="default"] svg.plot polyline').length >= 4,
    null,
    { timeout: STEP_MS },
  );

  await checkActions(page);
  await checkAccessibility(page);

  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
  await page.setViewportSize({ width: 375, height: 812 });
  await page.waitForTimeout(1200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the page scrolls sideways by ${overflow} px at 375 px wide`);
  await page.screenshot({ path: join(artifacts, "dashboard-phone.png"), fullPage: true });

  check(problems.length === 0, `the console reported: ${problems.join(" | ")}`);
  check(foreign.length === 0, `the page fetched from elsewhere: ${foreign.join(", ")}`);

  await page.setViewportSize({ width: 1280, height: 900 });
  say("stop-admin");
  await expectLine("admin-stopped");
  await page.locator("#banner").waitFor({ state: "visible" });
  const banner = await page.locator("#banner").innerText();
  check(banner.includes("cannot be reached"), `unexpected banner: ${banner}`);
  await page.screenshot({ path: join(artifacts, "dashboard-unreachable.png") });
  say("done");
}

async function checkActions(page) {
  const drain = page.locator('tr[data-backend-id="2"] button[data-action="drain"]');
  check(await drain.isDisabled(), "actions are enabled before a token is entered");
  await page.getByLabel("Admin token").fill("test-token");
  await page.getByRole("button", { name: "Use token" }).click();
  await drain.click();
  await waitForText(rowText(page, 2, "state"), "draining");
  await waitForText(page.locator("#action-result"), "Backend #2 is now draining.");
  check(await drain.isDisabled(), "drain stays enabled on a draining backend");
}

async function checkAccessibility(page) {
  const unlabelled = await page.evaluate(() =>
    Array.from(document.querySelectorAll("input, button, meter"))
      .filter((node) => !(node.labels && node.labels.length) && !node.textContent.trim() && !node.getAttribute("aria-label"))
      .map((node) => node.outerHTML),
  );
  check(unlabelled.length === 0, `controls without a label: ${unlabelled.join(" ")}`);
  const lang = await page.evaluate(() => document.documentElement.lang);
  check(lang === "en", "the page declares its language");
}

async function waitForText(locator, text) {
  try {
    await locator.filter({ hasText: text }).waitFor({ timeout: STEP_MS });
  } catch (error) {
    const actual = await locator.first().innerText().catch(() => "(missing)");
    throw new Error(`expected "${text}", the page shows "${actual}"`);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    say(`error: ${error.message.split("\n")[0]}`);
    process.exit(1);
  },
);

// Headless Chromium at a phone viewport: load the app, let the service worker cache it, go offline, reload,
// then classify images through the page's file input and report the tensors and predictions as JSON.
// node tests/browser.mjs '{"url": ..., "images": [...], "sizes": [64, 256], "bad": FILE, "screenshot": PNG}'
// ("bad" and "screenshot" are optional; "sizes" may be empty)
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { chromium } from "playwright-core";

const job = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"],
});
const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
const page = await context.newPage();
const log = [];
page.on("console", (message) => log.push(`${message.type()}: ${message.text()}`));
page.on("pageerror", (error) => log.push(`pageerror: ${error.message}`));

async function ready() {
  await page.waitForFunction(() => window.bmcell, null, { timeout: 60_000 });
  const error = await page.evaluate(() => window.bmcell.error);
  if (error) throw new Error(`the page refused the model: ${error}`);
}

/** Pick a file with the page's input and wait for the page's answer. */
async function pick(path) {
  await page.evaluate(() => { window.bmcellLast = undefined; });
  await page.setInputFiles("#file", path);
  await page.waitForFunction(() => window.bmcellLast, null, { timeout: 60_000 });
  return page.evaluate(() => window.bmcellLast);
}

const result = { log };
try {
  await page.goto(job.url);
  await ready();
  await page.waitForFunction(() => navigator.serviceWorker.controller, null, { timeout: 60_000 });
  result.cached = await page.evaluate(async () => (await (await caches.open("bmcell-demo-v1")).keys()).length);
  await context.setOffline(true);
  await page.reload();
  await ready();
  result.offline_model = await page.evaluate(() => window.bmcell.card.name);
  result.images = {};
  for (const path of job.images) {
    const answer = await pick(path);
    const bytes = readFileSync(path).toString("base64");
    answer.tensors = await page.evaluate(async ({ bytes, name, sizes }) => {
      const file = new File([Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0))], name);
      const image = await window.bmcell.decodeRgb(file);
      return Object.fromEntries(sizes.map((size) => [size, Array.from(window.bmcell.unitTensor(image, size).bytes)]));
    }, { bytes, name: basename(path), sizes: job.sizes });
    result.images[path] = answer;
  }
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
  if (job.bad) result.bad = await pick(job.bad);
} catch (error) {
  result.failure = String(error.stack || error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));

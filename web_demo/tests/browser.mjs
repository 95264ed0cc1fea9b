// Headless Chromium at a phone viewport: load the app, let the service worker cache it, go offline, reload,
// then classify images through the page's file input and report the tensors and predictions as JSON.
// node tests/browser.mjs '{"url": ..., "images": [...], "sizes": [64, 256], "bad": FILE, "screenshot": PNG,
//                          "variants": [{"name": ..., "model_json": {...}, "images": [...], "screenshot": PNG}]}'
// ("bad", "screenshot" and "variants" are optional; "sizes" may be empty). Each variant loads the page online, without
// the service worker, with bmcell_model/model.json replaced by model_json, and reports what the page shows: its
// refusal, or for each image the page's answer and the visible text of #answer, #note, #status and #top
// (non-breaking spaces as spaces).
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

/** Wait for the page to load its model; the page's refusal message, or undefined. */
async function loaded(on = page) {
  await on.waitForFunction(() => window.bmcell, null, { timeout: 60_000 });
  return on.evaluate(() => window.bmcell.error);
}

async function ready(on = page) {
  const error = await loaded(on);
  if (error) throw new Error(`the page refused the model: ${error}`);
}

/** Pick a file with the page's input and wait for the page's answer. */
async function pick(path, on = page) {
  await on.evaluate(() => { window.bmcellLast = undefined; });
  await on.setInputFiles("#file", path);
  await on.waitForFunction(() => window.bmcellLast, null, { timeout: 60_000 });
  return on.evaluate(() => window.bmcellLast);
}

/** The text a person sees in each of these elements ("" when hidden), and #status's class. */
async function shown(on) {
  const text = {};
  for (const id of ["model", "status", "answer", "note", "top-heading", "top"]) {
    const element = on.locator(`#${id}`);
    text[id] = (await element.isVisible()) ? (await element.innerText()).replaceAll("\u00a0", " ").trim() : "";
  }
  text.answer_class = await on.locator("#answer").getAttribute("class");
  text.top_class = await on.locator("#top").getAttribute("class");
  text.status_class = await on.locator("#status").getAttribute("class");
  text.file_enabled = await on.locator("#file").isEnabled();
  return text;
}

/** A fresh page (online, no service worker) whose bmcell_model/model.json is variant.model_json. */
async function runVariant(variant) {
  const variantContext = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, serviceWorkers: "block",
  });
  try {
    await variantContext.route("**/bmcell_model/model.json", (route) => route.fulfill({
      status: 200, contentType: "application/json", body: JSON.stringify(variant.model_json),
    }));
    const variantPage = await variantContext.newPage();
    variantPage.on("pageerror", (error) => log.push(`${variant.name} pageerror: ${error.message}`));
    await variantPage.goto(job.url);
    const error = await loaded(variantPage);
    const report = { error: error ?? null, page: await shown(variantPage), images: {} };
    if (!error) {
      for (const path of variant.images || []) {
        const answer = await pick(path, variantPage);
        answer.page = await shown(variantPage);
        report.images[path] = answer;
      }
    }
    if (variant.screenshot) await variantPage.screenshot({ path: variant.screenshot, fullPage: true });
    return report;
  } finally {
    await variantContext.close();
  }
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
  result.page = await shown(page);
  result.variants = {};
  for (const variant of job.variants || []) result.variants[variant.name] = await runVariant(variant);
} catch (error) {
  result.failure = String(error.stack || error);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));

// Headless Chromium at a phone viewport: a first visit, an online reload and an offline reload of the app, counting
// the bytes the server sends; then classify images through the page's file input and report the tensors,
// predictions and what the page shows as JSON.
// node tests/browser.mjs '{"url": ..., "images": [...], "sizes": [64, 256], "bad": [FILE, ...], "screenshot": PNG,
//                          "card_screenshot": PNG, "race": {"large": FILE, "small": FILE},
//                          "swap_model": {"site": DIR, "bundle": DIR},
//                          "variants": [{"name": ..., "model_json": {...}, "model_card": MARKDOWN, "images": [...],
//                                        "batches": [{"name": ..., "files": [FILE, ...]}], "screenshot": PNG}],
//                          "variants_only": true}'
// (all but "url" are optional; "images" and "sizes" default to none). "variants_only" skips everything before the
// variants (first visit, reload, offline, images, race, bad files, swap).
//
// The page is loaded through a counting proxy in front of job.url: "bytes" reports, for the first visit (until the
// page says "ready offline") and for an online reload, each path's requests, HTTP statuses and response body bytes,
// i.e. what crossed the network (the service worker's requests included; its cache and the HTTP cache send
// nothing). "race" picks the large file and at once the small one, and reports the order the runs ended and what
// the page shows afterwards. "swap_model" then goes online, replaces the served site's bmcell_model/ by another
// bundle (as `bmcell export --app` does), reloads and reports the model the page uses, the bytes and the cache (the
// original bundle is put back afterwards). Each variant loads the page online, without the service worker, with
// bmcell_model/model.json replaced by model_json, and reports what the page shows: its refusal, or for each image
// the page's answer and the visible text of #answer, #note, #status and #top (non-breaking spaces as spaces), and
// with its model card (model_card, when given, in place of MODEL_CARD.md) opened: how it is rendered and laid out,
// and for each of its batches (chosen at once with "Check a batch of my photos"): the page's summary
// (window.bmcellBatch), every text #batch-status showed while it ran, the animation frames the page drew meanwhile
// (it must not freeze) and what the page shows at the end.
import { cpSync, readFileSync, renameSync, rmSync } from "node:fs";
import http from "node:http";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

const job = JSON.parse(process.argv[2]);

/** An HTTP proxy to target that counts each path's requests, statuses and response body bytes. */
async function countingProxy(target) {
  const counts = {};
  const server = http.createServer((request, response) => {
    const path = new URL(request.url, target).pathname;
    const entry = (counts[path] ??= { requests: 0, bytes: 0, statuses: [] });
    entry.requests += 1;
    const upstream = http.request(new URL(request.url, target), { method: request.method, headers: request.headers },
      (answer) => {
        entry.statuses.push(answer.statusCode);
        response.writeHead(answer.statusCode, answer.headers);
        answer.on("data", (chunk) => { entry.bytes += chunk.length; });
        answer.pipe(response);
      });
    upstream.on("error", (error) => { response.destroy(error); });
    request.pipe(upstream);
  });
  await new Promise((resolve) => { server.listen(0, "127.0.0.1", resolve); });
  const snapshot = () => JSON.parse(JSON.stringify(counts));
  const since = (before) => Object.fromEntries(Object.entries(counts).map(([path, now]) => {
    const then = before[path] ?? { requests: 0, bytes: 0, statuses: [] };
    return [path, { requests: now.requests - then.requests, bytes: now.bytes - then.bytes,
      statuses: now.statuses.slice(then.statuses.length) }];
  }).filter(([, entry]) => entry.requests));
  return { url: `http://127.0.0.1:${server.address().port}/`, snapshot, since, close: () => server.close() };
}

const proxy = await countingProxy(job.url);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"],
});
const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
const page = await context.newPage();
const log = [];
page.on("console", (message) => log.push(`${message.type()}: ${message.text()}`));
page.on("pageerror", (error) => log.push(`pageerror: ${error.message}`));
const responses = []; // the page's responses for the runtime and the model: {url, status, fromServiceWorker}
page.on("response", (response) => {
  if (/\/(vendor|bmcell_model)\//.test(response.url())) {
    responses.push({ url: new URL(response.url()).pathname, status: response.status(),
      fromServiceWorker: response.fromServiceWorker() });
  }
});

/** Wait for the page to load its model; the page's refusal message, or undefined. */
async function loaded(on = page) {
  await on.waitForFunction(() => window.bmcell, null, { timeout: 120_000 });
  return on.evaluate(() => window.bmcell.error);
}

async function ready(on = page) {
  const error = await loaded(on);
  if (error) throw new Error(`the page refused the model: ${error}`);
}

/** Wait until the page says it is ready offline; its text. */
async function readyOffline(on = page) {
  await on.waitForFunction(() => document.getElementById("offline").className === "ready", null, { timeout: 60_000 });
  return (await on.locator("#offline").innerText()).trim();
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
  for (const id of ["model", "precision", "scores", "labs", "adapted", "flags", "route", "status", "offline", "answer",
    "timing", "novelty", "note", "top-heading", "top", "caption", "batch", "batch-status", "batch-result"]) {
    const element = on.locator(`#${id}`);
    text[id] = (await element.isVisible()) ? (await element.innerText()).replaceAll("\u00a0", " ").trim() : "";
  }
  text.details = ((await on.locator("#details").textContent()) || "").replaceAll("\u00a0", " ").trim();
  text.answer_class = await on.locator("#answer").getAttribute("class");
  text.top_class = await on.locator("#top").getAttribute("class");
  text.status_class = await on.locator("#status").getAttribute("class");
  text.file_enabled = await on.locator("#file").isEnabled();
  text.batch_enabled = await on.locator("#batch-files").isEnabled();
  text.route_code = await on.evaluate(() => Array.from(document.querySelectorAll("#route code"),
    (node) => node.textContent));
  text.card_link = await on.evaluate(() => document.getElementById("card-link")?.href ?? null);
  text.inputs = await on.evaluate(() => Array.from(document.querySelectorAll("input[type=file]"), (input) => ({
    id: input.id, capture: input.getAttribute("capture"), accept: input.accept,
  })));
  text.order = await on.evaluate(() => ["pick", "status", "answer", "timing", "preview", "note", "top", "offline"]
    .map((id) => [id, document.getElementById(id).getBoundingClientRect()]).filter(([, box]) => box.height > 0)
    .sort(([, a], [, b]) => a.top - b.top).map(([id]) => id)); // the visible ones, top to bottom on screen
  return text;
}

/**
 * Open the model card from the header link; how it is rendered: its visible text, the count of each tag in it, its
 * headings and links, the page's and the dialog's widths and, for each element outside a table's scrolling
 * container, the right edge furthest to the right (the viewport is 390 px wide). The screenshot shows its first table.
 */
async function modelCard(on, screenshot) {
  await on.click("#card-link");
  await on.waitForFunction(() => document.getElementById("card-dialog").open &&
    document.getElementById("card-text").childElementCount, null, { timeout: 10_000 });
  const card = await on.evaluate(() => {
    const dialog = document.getElementById("card-dialog");
    const text = document.getElementById("card-text");
    const tags = {};
    for (const node of text.querySelectorAll("*")) tags[node.localName] = (tags[node.localName] ?? 0) + 1;
    const box = dialog.getBoundingClientRect();
    const outside = Array.from(dialog.querySelectorAll("*")).filter((node) => !node.closest(".table-scroll table"));
    return {
      text: text.innerText.replaceAll("\u00a0", " "), tags,
      headings: Array.from(text.querySelectorAll("h2, h3, h4, h5"), (node) => node.textContent),
      links: Array.from(text.querySelectorAll("a"), (node) => ({ text: node.textContent, href: node.getAttribute("href"),
        rel: node.rel, target: node.target })),
      page_width: document.documentElement.scrollWidth, viewport: window.innerWidth,
      dialog: { left: box.left, right: box.right, scroll_width: dialog.scrollWidth, client_width: dialog.clientWidth },
      rightmost: Math.max(...outside.map((node) => node.getBoundingClientRect().right)),
      tables: Array.from(text.querySelectorAll(".table-scroll"), (node) => ({ right: node.getBoundingClientRect().right,
        scroll_width: node.scrollWidth, client_width: node.clientWidth })),
      injected: window.injected ?? null,
    };
  });
  if (screenshot) {
    if (card.tags.table) await on.locator("#card-text table").first().scrollIntoViewIfNeeded();
    await on.screenshot({ path: screenshot });
  }
  await on.click("#card-dialog button");
  return card;
}

/** The preview canvas: its pixel size, its size on screen and its pixels (uint8 CHW, like the model's input). */
async function preview(on = page) {
  return on.evaluate(() => {
    const canvas = document.getElementById("crop");
    const box = canvas.getBoundingClientRect();
    const { width, height } = canvas;
    const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const chw = new Array(3 * width * height);
    for (let i = 0; i < width * height; i++) {
      for (let c = 0; c < 3; c++) chw[c * width * height + i] = rgba[4 * i + c];
    }
    return { width, height, shown: { width: box.width, height: box.height }, visible: box.width > 0, chw };
  });
}

/** Choose job.race.large and at once job.race.small; wait for both runs to end; what the page shows. */
async function race({ large, small }) {
  await page.evaluate(() => { window.bmcellRuns.length = 0; window.bmcellLast = undefined; });
  await page.setInputFiles("#file", large);
  await page.setInputFiles("#file", small);
  await page.waitForFunction(() => window.bmcellRuns.length >= 2, null, { timeout: 120_000 });
  await page.waitForTimeout(500); // nothing may change after both runs have ended
  return { runs: await page.evaluate(() => window.bmcellRuns), last: await page.evaluate(() => window.bmcellLast),
    page: await shown(page), preview: await preview() };
}

/**
 * Choose files at once with "Check a batch of my photos" and wait for the batch to end: the page's summary, the texts
 * #batch-status showed on the way, the animation frames drawn meanwhile and what the page then shows.
 */
async function batch(files, on) {
  await on.evaluate(() => {
    window.bmcellBatch = null;
    const status = document.getElementById("batch-status");
    window.batchWatch = { texts: [], frames: 0, running: true };
    new MutationObserver(() => {
      const text = status.textContent;
      if (text && window.batchWatch.texts.at(-1) !== text) window.batchWatch.texts.push(text);
    }).observe(status, { childList: true, characterData: true, subtree: true });
    const frame = () => {
      window.batchWatch.frames += 1;
      if (window.batchWatch.running) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  await on.setInputFiles("#batch-files", files);
  await on.waitForFunction(() => window.bmcellBatch, null, { timeout: 300_000 });
  const watched = await on.evaluate(() => { window.batchWatch.running = false; return window.batchWatch; });
  return { summary: await on.evaluate(() => window.bmcellBatch), progress: watched.texts, frames: watched.frames,
    page: await shown(on) };
}

/** The service worker's cache: each URL's path and query. */
async function cachedUrls(on = page) {
  return on.evaluate(async () => (await (await caches.open(window.bmcellAssets.CACHE)).keys())
    .map((request) => { const url = new URL(request.url); return url.pathname + url.search; }));
}

/** Install another model into the served site, online, and reload; what the page then uses. */
async function swapModel({ site, bundle }) {
  await context.setOffline(false);
  const installed = join(site, "bmcell_model");
  const kept = `${installed}.kept`;
  renameSync(installed, kept);
  try {
    cpSync(bundle, installed, { recursive: true });
    const before = proxy.snapshot();
    await page.reload();
    await ready();
    const offline = await readyOffline();
    await page.waitForTimeout(500);
    return { model: await page.evaluate(() => window.bmcell.card.name), offline, bytes: proxy.since(before),
      cached: await cachedUrls() };
  } finally {
    rmSync(installed, { recursive: true, force: true });
    renameSync(kept, installed);
  }
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
    if (variant.model_card !== undefined) {
      await variantContext.route("**/bmcell_model/MODEL_CARD.md", (route) => route.fulfill({
        status: 200, contentType: "text/markdown; charset=utf-8", body: variant.model_card,
      }));
    }
    const variantPage = await variantContext.newPage();
    variantPage.on("pageerror", (error) => log.push(`${variant.name} pageerror: ${error.message}`));
    await variantPage.goto(job.url);
    const error = await loaded(variantPage);
    const report = { error: error ?? null, page: await shown(variantPage), images: {} };
    if (!error) {
      if (variant.model_card !== undefined) report.model_card = await modelCard(variantPage);
      for (const path of variant.images || []) {
        const answer = await pick(path, variantPage);
        answer.page = await shown(variantPage);
        report.images[path] = answer;
      }
      report.batches = {};
      for (const { name, files } of variant.batches || []) report.batches[name] = await batch(files, variantPage);
    }
    if (variant.screenshot) await variantPage.screenshot({ path: variant.screenshot, fullPage: true });
    return report;
  } finally {
    await variantContext.close();
  }
}

const result = { log };
/** A first visit, an online reload and an offline one, then job.images, race, bad files and swap_model. */
async function mainRuns() {
  // A first visit, online: until the page says it is ready offline.
  let before = proxy.snapshot();
  await page.goto(proxy.url);
  await ready();
  result.offline_first = await readyOffline();
  await page.waitForTimeout(500);
  result.bytes = { first: proxy.since(before) };
  result.first_page = await shown(page);
  result.cached = await cachedUrls();

  // An online reload: the runtime and the model come from the service worker's cache.
  before = proxy.snapshot();
  responses.length = 0;
  await page.reload();
  await ready();
  result.offline_reload = await readyOffline();
  await page.waitForTimeout(500);
  result.bytes.reload = proxy.since(before);
  result.reload_responses = [...responses];

  // Offline.
  await context.setOffline(true);
  await page.reload();
  await ready();
  result.offline_model = await page.evaluate(() => window.bmcell.card.name);
  result.offline_page = await shown(page);
  if (result.offline_page.card_link) result.model_card = await modelCard(page, job.card_screenshot);
  result.images = {};
  for (const path of job.images || []) {
    const answer = await pick(path);
    answer.page = await shown(page);
    const bytes = readFileSync(path).toString("base64");
    answer.tensors = await page.evaluate(async ({ bytes, name, sizes }) => {
      const file = new File([Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0))], name);
      const image = await window.bmcell.decodeRgb(file);
      return Object.fromEntries(sizes.map((size) => [size, Array.from(window.bmcell.unitTensor(image, size).bytes)]));
    }, { bytes, name: basename(path), sizes: job.sizes || [] });
    result.images[path] = answer;
  }
  if (job.race) result.race = await race(job.race);
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
  result.bad = {};
  for (const path of job.bad || []) result.bad[path] = { ...(await pick(path)), page: await shown(page) };
  result.page = await shown(page);
  if (job.swap_model) result.swap_model = await swapModel(job.swap_model);
}

try {
  if (!job.variants_only) await mainRuns();
  result.variants = {};
  for (const variant of job.variants || []) result.variants[variant.name] = await runVariant(variant);
} catch (error) {
  result.failure = String(error.stack || error);
} finally {
  await browser.close();
  proxy.close();
}
process.stdout.write(JSON.stringify(result));

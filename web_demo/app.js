// The page: load bmcell_model/ (checking its sha256), then classify pictures with onnxruntime-web (WASM).
// On a first visit it waits for the service worker (sw.js) to store the runtime and the model, then reads them from
// that cache, so each is downloaded once; later loads read them from the cache without asking the server.
import "./assets.js";
import { BadImageError, decodeRgb, unitTensor } from "./preprocess.js";

const assets = self.bmcellAssets;
const MODEL = "bmcell_model/";
// What preprocess.js implements; a model.json asking for anything else is refused rather than fed wrong input.
const SUPPORTED = { interpolation: "bilinear", antialias: true, scale: 1 / 255, mean: null, std: null };

let ort; // onnxruntime-web, imported from its versioned URL once the service worker (if any) can serve it

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchOk(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)}\u00a0MB`;
/** A probability for the class list: one decimal, and "<0.1 %" rather than "0.0 %" for tiny ones. */
const percent = (p) => (100 * p < 0.05 ? "<0.1\u00a0%" : `${(100 * p).toFixed(1)}\u00a0%`); // no break before the %
const plainPercent = (p) => `${(100 * p).toFixed(1)}\u00a0%`;

/**
 * Register the service worker. Resolves to {state, registration, installed, message}: state "controlled" (it serves
 * this page), "installing" (a first visit: `installed` resolves to "controlled" once it has stored the app and taken
 * this page, or "failed"), "uncontrolled" (active, but this page bypassed it, e.g. a hard reload), "unsupported"
 * (no service workers: not https or localhost), "blocked" or "failed".
 */
function startOfflineWorker() {
  if (!("serviceWorker" in navigator)) return Promise.resolve({ state: "unsupported" });
  const claimed = new Promise((resolve) => {
    navigator.serviceWorker.addEventListener("controllerchange", resolve, { once: true });
  });
  return (async () => {
    let registration;
    try {
      registration = await navigator.serviceWorker.register("sw.js");
    } catch (error) {
      return { state: "failed", message: error.message };
    }
    if (!registration) return { state: "blocked" };
    if (navigator.serviceWorker.controller) return { state: "controlled", registration };
    const worker = registration.installing || registration.waiting;
    if (!worker) return { state: "uncontrolled", registration };
    const failed = new Promise((resolve) => {
      const check = () => { if (worker.state === "redundant") resolve(); };
      worker.addEventListener("statechange", check);
      check();
    });
    const installed = Promise.race([claimed, failed])
      .then(() => (navigator.serviceWorker.controller ? "controlled" : "failed"));
    return { state: "installing", registration, installed };
  })();
}

/** vendor/ort.json: onnxruntime-web's version and its files' sizes and sha256 (written by `npm run setup`). */
async function readRuntimeFacts() {
  try {
    const facts = await (await fetchOk("vendor/ort.json")).json();
    assets.runtime(facts); // throws when a file is not described
    return facts;
  } catch (error) {
    throw new Error(`onnxruntime-web is not set up (${error.message}); run \`npm ci && npm run setup\` in web_demo`);
  }
}

/** Import onnxruntime-web from its versioned URLs (1 WASM thread). */
async function loadRuntime(facts) {
  const urls = assets.runtime(facts);
  const absolute = (name) => new URL(urls[name], location.href).href;
  ort = await import(absolute("ort.wasm.min.mjs"));
  ort.env.wasm.wasmPaths = { mjs: absolute("ort-wasm-simd-threaded.mjs"), wasm: absolute("ort-wasm-simd-threaded.wasm") };
  ort.env.wasm.numThreads = 1; // no cross-origin isolation needed; results do not depend on thread count
}

/**
 * model.json's "confidence": null (or absent, from older exports) for a model without calibrated confidence, else
 * {temperature, threshold, ...}: probabilities = softmax(logits / temperature), and a top probability below
 * threshold is shown as "uncertain". A block the app cannot apply is refused, like a preprocessing it does not do.
 */
function confidenceRule(card) {
  const confidence = card.confidence ?? null;
  if (confidence === null) return null;
  if (typeof confidence !== "object" || Array.isArray(confidence)) {
    throw new Error(`model.json's confidence must be null or an object, not ${JSON.stringify(confidence)}; ` +
      "reinstall the model with bmcell export --app");
  }
  const { temperature, threshold } = confidence;
  const problems = [];
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature <= 0) {
    problems.push(`temperature ${JSON.stringify(temperature)} (must be a finite number > 0)`);
  }
  if (typeof threshold !== "number" || !(threshold >= 0 && threshold <= 1)) {
    problems.push(`threshold ${JSON.stringify(threshold)} (must be a number from 0 to 1)`);
  }
  if (problems.length) {
    throw new Error(`model.json's confidence has an unusable ${problems.join(" and ")}: refusing the model; ` +
      "reinstall it with bmcell export --app");
  }
  return confidence;
}

/** model.json, checked: the preprocessing contract this app implements and a usable confidence block. */
async function readCard() {
  let response;
  try {
    response = await fetchOk(MODEL + "model.json");
  } catch (error) {
    throw new Error(`no model installed (${error.message}); run \`bmcell export RUN --target web --app web_demo\``);
  }
  let card;
  try {
    card = await response.json();
  } catch (error) {
    throw new Error(`model.json is not valid JSON (${error.message}); reinstall the model with bmcell export --app`);
  }
  const pre = card.preprocessing;
  const mismatched = Object.keys(SUPPORTED).filter((key) => pre[key] !== SUPPORTED[key]);
  if (pre.resize_shorter_side_to !== card.image_size || pre.center_crop !== card.image_size) mismatched.push("size");
  if (mismatched.length) throw new Error(`model.json asks for preprocessing this app does not do: ${mismatched}`);
  return { card, confidence: confidenceRule(card) };
}

/** A session for model.json's model, after checking the file's sha256 (once more from the server if it differs). */
async function loadSession(card) {
  const url = assets.model(card);
  let bytes = await (await fetchOk(url)).arrayBuffer();
  let actual = await sha256Hex(bytes);
  if (actual !== card.sha256) { // a damaged or stale copy: ask the server, bypassing every cache
    bytes = await (await fetchOk(url, { cache: "reload" })).arrayBuffer();
    actual = await sha256Hex(bytes);
  }
  if (actual !== card.sha256) {
    throw new Error(`${card.file} is not the model model.json describes (sha256 ${actual.slice(0, 12)}… ≠ ` +
      `${card.sha256.slice(0, 12)}…): refusing to use it; reinstall it with bmcell export --app`);
  }
  return { session: await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] }), bytes: bytes.byteLength };
}

/** What model.json's "model" block (export/apps.py; absent in older exports) says, each fact null when unknown. */
function modelFacts(card) {
  const info = card.model && typeof card.model === "object" && !Array.isArray(card.model) ? card.model : {};
  const text = (value) => (typeof value === "string" && value ? value : null);
  const fraction = (value) => (typeof value === "number" && value >= 0 && value <= 1 ? value : null);
  const names = info.class_names && typeof info.class_names === "object" ? info.class_names : {};
  return {
    name: text(info.name) ?? text(card.name) ?? "unnamed", precision: text(info.precision), arch: text(info.arch),
    epoch: Number.isInteger(info.epoch) ? info.epoch : null, version: text(card.bmcell_version),
    accuracy: fraction(info.artefact_val_accuracy) ?? fraction(info.val_accuracy),
    checkpointAccuracy: fraction(info.val_accuracy), artefactAccuracy: fraction(info.artefact_val_accuracy),
    parity: text(info.parity), cardUrl: assets.modelCard(card),
    classNames: Object.fromEntries(Object.entries(names).filter(([, name]) => text(name))),
  };
}

/** A class as the user reads it: "ig — immature granulocytes (…)", "erythroblast (nucleated …)", or the label. */
function classLabel(model, label) {
  const full = model.facts.classNames[label];
  if (!full || full === label) return label;
  return full.startsWith(label) ? full : `${label} — ${full}`;
}

/** The header: "Model NAME (PRECISION) · bmcell VERSION · 97.5 % on its validation images · model card". */
function showVersionLine(model) {
  const { facts } = model;
  const parts = [`Model ${facts.name}${facts.precision ? ` (${facts.precision})` : ""}`];
  if (facts.version) parts.push(`bmcell ${facts.version}`);
  if (facts.accuracy !== null) parts.push(`${plainPercent(facts.accuracy)} on its validation images`);
  const line = $("model");
  line.replaceChildren(parts.join(" · "));
  if (facts.cardUrl) {
    const link = document.createElement("a");
    link.id = "card-link";
    link.href = facts.cardUrl;
    link.textContent = "model card";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      showModelCard(facts.cardUrl);
    });
    line.append(" · ", link);
  }
}

/** The technical facts, folded away under the version line. */
function showDetails(model, runtimeFacts) {
  const { card, confidence, facts } = model;
  const rows = [
    `${card.name} file ${card.file} (${megabytes(model.bytes)}), sha256 ${card.sha256.slice(0, 12)}… verified ` +
      "on this device",
    `${card.classes.length} classes: ${card.classes.map((label) => classLabel(model, label)).join(", ")}`,
    `input: the centre square of the picture at ${card.image_size} × ${card.image_size} px`,
  ];
  if (facts.arch) rows.push(`architecture ${facts.arch}${facts.epoch !== null ? `, epoch ${facts.epoch}` : ""}`);
  if (facts.checkpointAccuracy !== null || facts.artefactAccuracy !== null) {
    const measured = [];
    if (facts.checkpointAccuracy !== null) measured.push(`${plainPercent(facts.checkpointAccuracy)} (trained model)`);
    if (facts.artefactAccuracy !== null) measured.push(`${plainPercent(facts.artefactAccuracy)} (this file)`);
    rows.push(`validation accuracy ${measured.join(", ")}`);
  }
  if (facts.parity) rows.push(`parity with the trained model: ${facts.parity}`);
  rows.push(confidence ? `calibrated (temperature ${Number(confidence.temperature.toPrecision(4))}), threshold ` +
    `${plainPercent(confidence.threshold)}` : "no calibrated confidence");
  rows.push(`onnxruntime-web ${runtimeFacts.version} (WebAssembly, 1 thread)`);
  $("details-list").replaceChildren(...rows.map((row) => {
    const item = document.createElement("li");
    item.textContent = row;
    return item;
  }));
  $("details").hidden = false;
}

async function showModelCard(url) {
  let text;
  try {
    text = await (await fetchOk(url)).text();
  } catch (error) {
    text = `The model card could not be read (${error.message}).`;
  }
  $("card-text").textContent = text;
  $("card-dialog").showModal();
}

/** softmax(logits / temperature), in float64. */
function softmax(logits, temperature = 1) {
  const scaled = Array.from(logits, (v) => v / temperature);
  const max = Math.max(...scaled);
  const exps = scaled.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

let modelQueue = Promise.resolve(); // one session.run at a time

/** Run the model after any run in progress: {output, ms}, or null when the picture is stale by then. */
function runModel(model, feeds, isStale) {
  const run = modelQueue.then(async () => {
    if (isStale()) return null;
    const start = performance.now();
    const output = await model.session.run(feeds);
    return { output, ms: performance.now() - start };
  });
  modelQueue = run.catch(() => {});
  return run;
}

/**
 * Classify one file: {probabilities, top: every class [{label, probability}], most probable first, uncertain,
 * image: {width, height}, crop: the uint8 CHW pixels the model sees, timing: {decode_ms, preprocess_ms, model_ms,
 * total_ms}}, or null when isStale() says a newer picture was chosen meanwhile. probabilities are calibrated
 * (softmax of logits / temperature) when model.json has a confidence block, and uncertain is true when the top one
 * is below its threshold (always false without the block).
 */
async function classify(model, file, isStale = () => false) {
  const start = performance.now();
  const image = await decodeRgb(file);
  if (isStale()) return null;
  const decoded = performance.now();
  const size = model.card.image_size;
  const { tensor, bytes } = unitTensor(image, size);
  const preprocessed = performance.now();
  const feeds = { [model.session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, size, size]) };
  const ran = await runModel(model, feeds, isStale);
  if (ran === null || isStale()) return null;
  const { confidence } = model;
  const logits = ran.output[model.session.outputNames[0]].data;
  const probabilities = softmax(logits, confidence ? confidence.temperature : 1);
  const top = probabilities.map((probability, i) => ({ label: model.card.classes[i], probability }))
    .sort((a, b) => b.probability - a.probability);
  const uncertain = confidence !== null && top[0].probability < confidence.threshold;
  const timing = { decode_ms: decoded - start, preprocess_ms: preprocessed - decoded, model_ms: ran.ms,
    total_ms: performance.now() - start };
  return { probabilities, top, uncertain, image: { width: image.width, height: image.height }, crop: bytes, timing };
}

/** Draw the model's input (uint8 CHW, size x size) on the preview canvas: what the model sees. */
function drawCrop(bytes, size) {
  const canvas = $("crop");
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(size, size);
  const plane = size * size;
  for (let i = 0; i < plane; i++) {
    pixels.data[4 * i] = bytes[i];
    pixels.data[4 * i + 1] = bytes[plane + i];
    pixels.data[4 * i + 2] = bytes[2 * plane + i];
    pixels.data[4 * i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
}

const ms = (value) => `${Math.round(value)}\u00a0ms`;

/** The answer (a class, or "uncertain — check by eye"), what the model saw, the time, then every class. */
function show(model, result, file) {
  const [best] = result.top;
  const answer = $("answer");
  if (result.uncertain) {
    answer.className = "uncertain";
    answer.innerHTML = "<strong>uncertain — check by eye</strong><span></span>";
    answer.querySelector("span").textContent = `the most probable class, ${classLabel(model, best.label)} ` +
      `(${percent(best.probability)}), is below this model's threshold of ${plainPercent(model.confidence.threshold)}`;
    setStatus("uncertain: below this model's threshold");
  } else {
    answer.className = "confident";
    answer.innerHTML = "<strong></strong><span></span>";
    answer.querySelector("strong").textContent = classLabel(model, best.label);
    answer.querySelector("span").textContent = percent(best.probability);
    setStatus(`top-1: ${best.label}`);
  }
  answer.hidden = false;
  const { timing } = result;
  $("timing").textContent = `Classified in ${ms(timing.total_ms)} on this device (reading the picture ` +
    `${ms(timing.decode_ms)}, resizing ${ms(timing.preprocess_ms)}, model ${ms(timing.model_ms)}).`;
  $("timing").hidden = false;
  $("top").className = result.uncertain ? "secondary" : "";
  $("top").replaceChildren(...result.top.map(({ label, probability }) => {
    const item = document.createElement("li");
    item.innerHTML = `<strong></strong> ${percent(probability)}<div class="bar"></div>`;
    item.querySelector("strong").textContent = classLabel(model, label);
    item.querySelector(".bar").style.width = `${(100 * probability).toFixed(1)}%`;
    return item;
  }));
  $("top-heading").hidden = false;
  const size = model.card.image_size;
  const { width, height } = result.image;
  drawCrop(result.crop, size);
  const side = Math.min(width, height);
  $("caption").textContent = width === height
    ? `${file.name}: the whole ${width} × ${height} px picture, as the model sees it (${size} × ${size} px)`
    : `${file.name}: what the model sees — the centre ${side} × ${side} px square of the ${width} × ${height} px ` +
      `picture, at ${size} × ${size} px`;
  $("preview").hidden = false;
}

/** What the page says about the model's confidence, under the answer. */
function confidenceNote(confidence) {
  if (confidence === null) {
    return "This model has no calibrated confidence: its probabilities are not calibrated and no answer is marked " +
      "uncertain.";
  }
  const fitted = typeof confidence.fitted_on === "string" ? ` Threshold fitted on: ${confidence.fitted_on}.` : "";
  return `Answers only at a calibrated probability of ${plainPercent(confidence.threshold)} or more; below that: ` +
    `uncertain — check by eye.${fitted}`;
}

let latestRun = 0; // only the latest picture's result is shown: an older run finishing later is dropped
window.bmcellRuns = []; // for tests: {run, file, outcome: "shown" | "error" | "dropped"} in the order they end

async function onFile(model, file) {
  const run = ++latestRun;
  const isStale = () => run !== latestRun;
  const end = (outcome) => window.bmcellRuns.push({ run, file: file.name, outcome });
  $("top").replaceChildren();
  $("answer").hidden = true;
  $("timing").hidden = true;
  $("top-heading").hidden = true;
  $("preview").hidden = true;
  setStatus(`classifying ${file.name}…`);
  try {
    const result = await classify(model, file, isStale);
    if (result === null || isStale()) return end("dropped");
    show(model, result, file);
    const { crop, ...rest } = result; // the crop is on the canvas
    window.bmcellLast = { file: file.name, ...rest };
    end("shown");
  } catch (error) {
    if (isStale()) return end("dropped");
    const message = error instanceof BadImageError ? error.message : `${file.name}: ${error.message}`;
    setStatus(message, true);
    window.bmcellLast = { file: file.name, error: message };
    end("error");
  }
}

/** The URLs assets.js lists that the service worker's cache lacks. */
async function missingOffline(urls) {
  const cache = await caches.open(assets.CACHE);
  const found = await Promise.all(urls.map((url) => cache.match(url)));
  return urls.filter((_, i) => !found[i]);
}

/** Say whether the app works offline now: "ready offline" once all it needs (urls) is in the worker's cache. */
async function showOffline(worker, urls) {
  const element = $("offline");
  const say = (className, text) => { element.className = className; element.textContent = text; };
  const why = {
    unsupported: "service workers need https:// or localhost (see the README)",
    blocked: "this browser did not register the service worker",
    failed: `the service worker failed${worker.message ? ` (${worker.message})` : ""}`,
  }[worker.state];
  if (why) return say("unavailable", `Not available offline: ${why}.`);
  for (let attempt = 1; ; attempt++) {
    const missing = await missingOffline(urls);
    if (!missing.length && worker.registration.active) {
      return say("ready", "✓ Ready offline: the app, its runtime and the model are stored on this device; it works " +
        "without a network from now on.");
    }
    if (attempt > 30) return say("unavailable", `Not available offline: ${missing.join(", ")} not stored.`);
    say("pending", `Storing for offline use… (${missing.length} file${missing.length === 1 ? "" : "s"} to go)`);
    await new Promise((resolve) => { setTimeout(resolve, 1000); });
  }
}

async function main() {
  const starting = startOfflineWorker();
  try {
    const [runtimeFacts, { card, confidence }] = await Promise.all([readRuntimeFacts(), readCard()]);
    const worker = await starting;
    if (worker.state === "installing") { // a first visit: the worker downloads runtime and model, once
      const runtimeBytes = Object.values(runtimeFacts.files).reduce((total, file) => total + file.bytes, 0);
      setStatus(`First visit: storing the app for offline use (runtime ${megabytes(runtimeBytes)}, model ` +
        `${megabytes(card.bytes || 0)}), once…`);
      worker.state = await worker.installed;
    }
    setStatus("loading the model…");
    await loadRuntime(runtimeFacts);
    const { session, bytes } = await loadSession(card);
    const model = { card, confidence, session, bytes, facts: modelFacts(card) };
    showVersionLine(model);
    showDetails(model, runtimeFacts);
    $("note").textContent = confidenceNote(confidence);
    $("note").hidden = false;
    for (const input of [$("file"), $("camera")]) {
      input.disabled = false;
      input.addEventListener("change", (event) => {
        const [file] = event.target.files;
        if (file) onFile(model, file);
        event.target.value = "";
      });
    }
    // For tests and debugging: the same steps the page takes, callable with a File.
    window.bmcell = { card, confidence, runtime: runtimeFacts, classify: (file) => classify(model, file), decodeRgb,
      unitTensor };
    setStatus("ready: choose or take a picture");
    // The model card is small and network first: asking for it keeps the stored copy that of the installed model.
    if (model.facts.cardUrl && navigator.onLine) fetch(model.facts.cardUrl).catch(() => {});
    showOffline(worker, assets.all(runtimeFacts, card).filter((url) => url !== model.facts.cardUrl));
  } catch (error) {
    $("model").textContent = "no usable model";
    setStatus(error.message, true);
    window.bmcell = { error: error.message };
  }
}

main();

// The page: load bmcell_model/ (checking its sha256), then classify pictures with onnxruntime-web (WASM).
import * as ort from "./vendor/ort.wasm.min.mjs";
import { BadImageError, decodeRgb, unitTensor } from "./preprocess.js";

const MODEL = "bmcell_model/";
// What preprocess.js implements; a model.json asking for anything else is refused rather than fed wrong input.
const SUPPORTED = { interpolation: "bilinear", antialias: true, scale: 1 / 255, mean: null, std: null };

ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
ort.env.wasm.numThreads = 1; // no cross-origin isolation needed; results do not depend on thread count

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
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

/** model.json and a session, after checking the model file's sha256, the preprocessing contract and confidence. */
async function loadModel() {
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
  const confidence = confidenceRule(card);
  const bytes = await (await fetchOk(MODEL + card.file)).arrayBuffer();
  const actual = await sha256Hex(bytes);
  if (actual !== card.sha256) {
    throw new Error(`${card.file} is not the model model.json describes (sha256 ${actual.slice(0, 12)}… ≠ ` +
      `${card.sha256.slice(0, 12)}…): refusing to use it; reinstall it with bmcell export --app`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  return { card, confidence, session };
}

/** softmax(logits / temperature), in float64. */
function softmax(logits, temperature = 1) {
  const scaled = Array.from(logits, (v) => v / temperature);
  const max = Math.max(...scaled);
  const exps = scaled.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

/**
 * Classify one file: {probabilities, top: [{label, probability}] x 3, uncertain, image: {width, height}}.
 * probabilities are calibrated (softmax of logits / temperature) when model.json has a confidence block, and
 * uncertain is true when the top one is below its threshold (always false without the block).
 */
async function classify(model, file) {
  const image = await decodeRgb(file);
  const size = model.card.image_size;
  const { tensor } = unitTensor(image, size);
  const feeds = { [model.session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, size, size]) };
  const output = await model.session.run(feeds);
  const { confidence } = model;
  const probabilities = softmax(output[model.session.outputNames[0]].data, confidence ? confidence.temperature : 1);
  const top = probabilities.map((probability, i) => ({ label: model.card.classes[i], probability }))
    .sort((a, b) => b.probability - a.probability).slice(0, 3);
  const uncertain = confidence !== null && top[0].probability < confidence.threshold;
  return { probabilities, top, uncertain, image: { width: image.width, height: image.height } };
}

const percent = (p) => `${(100 * p).toFixed(1)}\u00a0%`; // no line break before the %

/** The answer (a class, or "uncertain — check by eye"), then the top 3 as secondary detail. */
function show(model, result, file) {
  const [best] = result.top;
  const answer = $("answer");
  if (result.uncertain) {
    answer.className = "uncertain";
    answer.innerHTML = "<strong>uncertain — check by eye</strong><span></span>";
    answer.querySelector("span").textContent = `the most probable class, ${best.label} (${percent(best.probability)}),` +
      ` is below this model's threshold of ${percent(model.confidence.threshold)}`;
    setStatus("uncertain: below this model's threshold");
  } else {
    answer.className = "confident";
    answer.innerHTML = "<strong></strong><span></span>";
    answer.querySelector("strong").textContent = best.label;
    answer.querySelector("span").textContent = percent(best.probability);
    setStatus(`top-1: ${best.label}`);
  }
  answer.hidden = false;
  $("top").className = result.uncertain ? "secondary" : "";
  $("top").replaceChildren(...result.top.map(({ label, probability }) => {
    const item = document.createElement("li");
    item.innerHTML = `<strong></strong> ${percent(probability)}<div class="bar"></div>`;
    item.querySelector("strong").textContent = label;
    item.querySelector(".bar").style.width = `${(100 * probability).toFixed(1)}%`;
    return item;
  }));
  $("top-heading").hidden = false;
  $("caption").textContent = `${file.name}: ${result.image.width}x${result.image.height}`;
}

/** What the page says about the model's confidence, under the answer. */
function confidenceNote(confidence) {
  if (confidence === null) {
    return "This model has no calibrated confidence: its probabilities are not calibrated and no answer is marked " +
      "uncertain.";
  }
  const fitted = typeof confidence.fitted_on === "string" ? ` Threshold fitted on: ${confidence.fitted_on}.` : "";
  return `Answers only at a calibrated probability of ${percent(confidence.threshold)} or more; below that: ` +
    `uncertain — check by eye.${fitted}`;
}

async function onFile(model, file) {
  $("top").replaceChildren();
  $("answer").hidden = true;
  $("top-heading").hidden = true;
  $("preview").hidden = true;
  setStatus("classifying…");
  try {
    const result = await classify(model, file);
    $("image").src = URL.createObjectURL(file);
    $("preview").hidden = false;
    show(model, result, file);
    window.bmcellLast = { file: file.name, ...result };
  } catch (error) {
    const message = error instanceof BadImageError ? error.message : `${file.name}: ${error.message}`;
    setStatus(message, true);
    window.bmcellLast = { file: file.name, error: message };
  }
}

async function main() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch((error) => console.warn("offline mode unavailable:", error));
  }
  try {
    const model = await loadModel();
    const { card, confidence } = model;
    $("model").textContent = `${card.name}, ${card.classes.length} classes, ${card.image_size} px, ` +
      `sha256 ${card.sha256.slice(0, 12)}… verified` +
      (confidence ? `, calibrated (temperature ${confidence.temperature})` : ", no calibrated confidence");
    $("note").textContent = confidenceNote(confidence);
    $("note").hidden = false;
    $("file").disabled = false;
    $("file").addEventListener("change", (event) => {
      const [file] = event.target.files;
      if (file) onFile(model, file);
      event.target.value = "";
    });
    // For tests and debugging: the same steps the page takes, callable with a File.
    window.bmcell = { card, confidence, classify: (file) => classify(model, file), decodeRgb, unitTensor };
    setStatus("ready: pick or take a picture");
  } catch (error) {
    $("model").textContent = "no usable model";
    setStatus(error.message, true);
    window.bmcell = { error: error.message };
  }
}

main();

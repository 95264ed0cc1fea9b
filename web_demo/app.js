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

/** model.json and a session, after checking the model file's sha256 and the preprocessing contract. */
async function loadModel() {
  let card;
  try {
    card = await (await fetchOk(MODEL + "model.json")).json();
  } catch (error) {
    throw new Error(`no model installed (${error.message}); run \`bmcell export RUN --target web --app web_demo\``);
  }
  const pre = card.preprocessing;
  const mismatched = Object.keys(SUPPORTED).filter((key) => pre[key] !== SUPPORTED[key]);
  if (pre.resize_shorter_side_to !== card.image_size || pre.center_crop !== card.image_size) mismatched.push("size");
  if (mismatched.length) throw new Error(`model.json asks for preprocessing this app does not do: ${mismatched}`);
  const bytes = await (await fetchOk(MODEL + card.file)).arrayBuffer();
  const actual = await sha256Hex(bytes);
  if (actual !== card.sha256) {
    throw new Error(`${card.file} is not the model model.json describes (sha256 ${actual.slice(0, 12)}… ≠ ` +
      `${card.sha256.slice(0, 12)}…): refusing to use it; reinstall it with bmcell export --app`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  return { card, session };
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

/** Classify one file: {probabilities, top: [{label, probability}] x 3, image: {width, height}}. */
async function classify(model, file) {
  const image = await decodeRgb(file);
  const size = model.card.image_size;
  const { tensor } = unitTensor(image, size);
  const feeds = { [model.session.inputNames[0]]: new ort.Tensor("float32", tensor, [1, 3, size, size]) };
  const output = await model.session.run(feeds);
  const probabilities = softmax(output[model.session.outputNames[0]].data);
  const top = probabilities.map((probability, i) => ({ label: model.card.classes[i], probability }))
    .sort((a, b) => b.probability - a.probability).slice(0, 3);
  return { probabilities, top, image: { width: image.width, height: image.height } };
}

function show(result, file) {
  $("top").replaceChildren(...result.top.map(({ label, probability }) => {
    const item = document.createElement("li");
    item.innerHTML = `<strong></strong> ${(100 * probability).toFixed(1)} %<div class="bar"></div>`;
    item.querySelector("strong").textContent = label;
    item.querySelector(".bar").style.width = `${(100 * probability).toFixed(1)}%`;
    return item;
  }));
  $("caption").textContent = `${file.name}: ${result.image.width}x${result.image.height}`;
  setStatus(`top-1: ${result.top[0].label}`);
}

async function onFile(model, file) {
  $("top").replaceChildren();
  $("preview").hidden = true;
  setStatus("classifying…");
  try {
    const result = await classify(model, file);
    $("image").src = URL.createObjectURL(file);
    $("preview").hidden = false;
    show(result, file);
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
    const { card } = model;
    $("model").textContent = `${card.name}, ${card.classes.length} classes, ${card.image_size} px, ` +
      `sha256 ${card.sha256.slice(0, 12)}… verified`;
    $("file").disabled = false;
    $("file").addEventListener("change", (event) => {
      const [file] = event.target.files;
      if (file) onFile(model, file);
      event.target.value = "";
    });
    // For tests and debugging: the same steps the page takes, callable with a File.
    window.bmcell = { card, classify: (file) => classify(model, file), decodeRgb, unitTensor };
    setStatus("ready: pick or take a picture");
  } catch (error) {
    $("model").textContent = "no usable model";
    setStatus(error.message, true);
    window.bmcell = { error: error.message };
  }
}

main();

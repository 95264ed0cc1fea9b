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
const isFraction = (value) => typeof value === "number" && value >= 0 && value <= 1;
const isObject = (value) => Boolean(value) && typeof value === "object" && !Array.isArray(value);
/** A probability for the class list: one decimal, and "<0.1 %" rather than "0.0 %" for tiny ones. */
const percent = (p) => (100 * p < 0.05 ? "<0.1\u00a0%" : `${(100 * p).toFixed(1)}\u00a0%`); // no break before the %
const plainPercent = (p) => `${(100 * p).toFixed(1)}\u00a0%`;
/** A rough share (an estimate, an accuracy with a wide interval): "87 %". */
const wholePercent = (p) => `${Math.round(100 * p)}\u00a0%`;
/** "1 cell", "1,200 cells". */
const howMany = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
/** A novelty score or its threshold, in multiples of the usual distance: "1.43 ×" (no break before the ×). */
const times = (value) => `${value.toFixed(2)}\u00a0×`;

// The words of a picture unlike every cell the model was trained on; the Android app's Novelty.kt and the iOS app's
// Classifier.swift say the same (tests/contract/wording.py).
const UNKNOWN_TEXT = "does not look like a cell this model knows";
const UNKNOWN_WHY = "It is unlike every cell this model was trained on — another kind of cell (a blast?), not a cell " +
  "at all, or a very different microscope or stain: check by eye.";
const NOVELTY_PANEL = "Pictures unlike every cell it was trained on get no cell type: it says " +
  `\u201c${UNKNOWN_TEXT}\u201d.`;
/** How unlike the training cells a picture is, under its answer: its novelty score and the threshold, in words. */
const noveltyLine = (score, threshold) => `Unlike the cells it was trained on: ${times(score)} the usual distance ` +
  `(flagged from ${times(threshold)}).`;

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
 * {temperature, threshold, confident_from, ...}: probabilities = softmax(logits / temperature); a top probability
 * below threshold is shown as "uncertain", one below confident_from (default (1 + threshold) / 2 when absent or
 * null) as a low-confidence answer. A block the app cannot apply is refused, like a preprocessing it does not do.
 */
function confidenceRule(card) {
  const confidence = card.confidence ?? null;
  if (confidence === null) return null;
  if (!isObject(confidence)) {
    throw new Error(`model.json's confidence must be null or an object, not ${JSON.stringify(confidence)}; ` +
      "reinstall the model with bmcell export --app");
  }
  const { temperature, threshold } = confidence;
  const confidentFrom = confidence.confident_from ?? (1 + threshold) / 2;
  const problems = [];
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature <= 0) {
    problems.push(`temperature ${JSON.stringify(temperature)} (must be a finite number > 0)`);
  }
  if (!isFraction(threshold)) {
    problems.push(`threshold ${JSON.stringify(threshold)} (must be a number from 0 to 1)`);
  } else if (!isFraction(confidentFrom) || confidentFrom < threshold) {
    problems.push(`confident_from ${JSON.stringify(confidentFrom)} (must be a number from the threshold, ` +
      `${threshold}, to 1)`);
  }
  if (problems.length) {
    throw new Error(`model.json's confidence has an unusable ${problems.join(" and ")}: refusing the model; ` +
      "reinstall it with bmcell export --app");
  }
  return { ...confidence, confident_from: confidentFrom };
}

/**
 * model.json's "novelty": null (or absent, from older exports) for a model whose output is its C class scores only,
 * else {threshold, output_index, flagged_on_validation, ...}: the output then holds the C class scores, then at
 * output_index (which must be C) the picture's novelty score; a score at or above threshold means the picture does
 * not look like a cell this model knows. {threshold, outputIndex, flaggedOnValidation (null when unknown)}, or null; a
 * block the app cannot apply is refused, like an unusable confidence block.
 */
function noveltyRule(card) {
  const novelty = card.novelty ?? null;
  if (novelty === null) return null;
  if (!isObject(novelty)) {
    throw new Error(`model.json's novelty must be null or an object, not ${JSON.stringify(novelty)}: refusing ` +
      "the model; reinstall it with bmcell export --app");
  }
  const { threshold, output_index: outputIndex } = novelty;
  const classes = card.classes.length;
  const problems = [];
  if (typeof threshold !== "number" || !Number.isFinite(threshold) || threshold <= 0) {
    problems.push(`threshold ${JSON.stringify(threshold)} (must be a finite number > 0)`);
  }
  if (outputIndex !== classes) {
    problems.push(`output_index ${JSON.stringify(outputIndex)} (must be ${classes}: the score after the ${classes} ` +
      "class scores)");
  }
  if (problems.length) {
    throw new Error(`model.json's novelty has an unusable ${problems.join(" and ")}: refusing the model; ` +
      "reinstall it with bmcell export --app");
  }
  const flagged = novelty.flagged_on_validation;
  return { threshold, outputIndex, flaggedOnValidation: isFraction(flagged) ? flagged : null };
}

/**
 * Why a model output of `length` values per picture does not fit model.json (its C class scores, then the novelty
 * score when it has a novelty block), or null when it does.
 */
function outputProblem(length, classes, novelty) {
  if (length === classes + (novelty ? 1 : 0)) return null;
  const declared = novelty ? `model.json declares novelty at index ${novelty.outputIndex} (${classes} class ` +
    "scores, then the novelty score)" : `model.json lists ${classes} classes and no novelty score`;
  return `the model's output has ${length} values, but ${declared}: refusing the model; reinstall it with bmcell ` +
    "export --app";
}

/** Refuse a session whose ONNX file fixes an output length (its last dimension) that model.json does not declare. */
function checkOutput(session, card, novelty) {
  const shape = session.outputMetadata?.[0]?.shape;
  const length = Array.isArray(shape) ? shape.at(-1) : undefined;
  const problem = Number.isInteger(length) ? outputProblem(length, card.classes.length, novelty) : null;
  if (problem) throw new Error(problem);
}

/** model.json, checked: the preprocessing contract this app implements and usable confidence and novelty blocks. */
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
  return { card, confidence: confidenceRule(card), novelty: noveltyRule(card), labCheck: labCheckRule(card) };
}

/**
 * model.json's "lab_check" (absent or null in older exports): {threshold, validation_accuracy, min_images}. A batch
 * of photos' estimated accuracy is the share whose calibrated top probability is >= threshold (a threshold `bmcell
 * export` fitted on the model's reference cells so that this share equals its accuracy there). {rule: {threshold,
 * validationAccuracy, minImages}, problem: null}, or {rule: null, problem: why there is no check}; an unusable
 * block only turns the batch check off, it does not refuse the model.
 */
function labCheckRule(card) {
  const block = card.lab_check ?? null;
  if (block === null) return { rule: null, problem: "this model carries no accuracy check" };
  const minImages = isObject(block) ? block.min_images ?? 20 : null;
  if (!isObject(block) || !isFraction(block.threshold) || !Number.isInteger(minImages) || minImages < 1) {
    return { rule: null, problem: `this model's accuracy check is unusable (${JSON.stringify(block)})` };
  }
  const validationAccuracy = isFraction(block.validation_accuracy) ? block.validation_accuracy : null;
  return { rule: { threshold: block.threshold, validationAccuracy, minImages }, problem: null };
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

/** How the header names a precision when model.json's "model" block has no precision_words. */
const PRECISION_WORDS = new Map([
  ["int8", "compact 8-bit version"], ["fp16", "half-precision version"], ["fp32", "full-precision version"],
]);

/**
 * model.json's "scores": the accuracy measured on each lab's images at release, [{set, images, accuracy}], the
 * largest set first; entries without a set name, a whole number of images > 0 and an accuracy in [0, 1] are dropped.
 */
function labScores(scores) {
  if (!Array.isArray(scores)) return [];
  return scores.filter((score) => isObject(score) && typeof score.set === "string" && score.set &&
    Number.isInteger(score.images) && score.images > 0 && isFraction(score.accuracy))
    .sort((a, b) => b.images - a.images);
}

/** A count of cells: a whole number > 0, else null (unknown). */
const cellCount = (value) => (Number.isInteger(value) && value > 0 ? value : null);

/**
 * model.json's "labs": the labs (image sets) the model was trained on, in the order given, [{name, cells}]; an entry
 * without a non-empty name is dropped, a count that is not a whole number > 0 is unknown (null).
 */
function trainedLabs(labs) {
  if (!Array.isArray(labs)) return [];
  return labs.filter((lab) => isObject(lab) && typeof lab.name === "string" && lab.name)
    .map((lab) => ({ name: lab.name, cells: cellCount(lab.cells) }));
}

/**
 * model.json's "adapted_to" (set by `bmcell finetune`): {lab, cells, accuracy, interval: [low, high]}, each but the
 * lab null when missing or malformed; null when there is no lab name (not adapted, or an older export).
 */
function adaptation(adapted) {
  if (!isObject(adapted) || typeof adapted.lab !== "string" || !adapted.lab) return null;
  const { interval } = adapted;
  const usable = Array.isArray(interval) && interval.length === 2 && interval.every(isFraction) &&
    interval[0] <= interval[1];
  return { lab: adapted.lab, cells: cellCount(adapted.cells),
    accuracy: isFraction(adapted.accuracy) ? adapted.accuracy : null, interval: usable ? interval : null };
}

/** What model.json's "model" block (export/apps.py; absent in older exports) says, each fact null when unknown. */
function modelFacts(card) {
  const info = isObject(card.model) ? card.model : {};
  const text = (value) => (typeof value === "string" && value ? value : null);
  const fraction = (value) => (isFraction(value) ? value : null);
  const names = isObject(info.class_names) ? info.class_names : {};
  return {
    name: text(info.name) ?? text(card.name) ?? "unnamed", arch: text(info.arch),
    precisionWords: text(info.precision_words) ?? PRECISION_WORDS.get(info.precision) ?? null,
    epoch: Number.isInteger(info.epoch) ? info.epoch : null, version: text(card.bmcell_version),
    accuracy: fraction(info.artefact_val_accuracy) ?? fraction(info.val_accuracy),
    checkpointAccuracy: fraction(info.val_accuracy), artefactAccuracy: fraction(info.artefact_val_accuracy),
    scores: labScores(info.scores), labs: trainedLabs(info.labs), adaptedTo: adaptation(info.adapted_to),
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

/** A new element holding children: strings (added as text, never parsed as HTML) or nodes. */
function element(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

/** Set a header line's text, hidden when there is none. */
function showLine(id, text) {
  $(id).textContent = text ?? "";
  $(id).hidden = !text;
}

/**
 * How well the model did, in plain words: "Tested on 1,537 pbc cells: 97.5 % right · 162 chula cells: 69.1 % right"
 * from the per-lab scores, else "Right on 89.5 % of its test images", else null.
 */
function scoresLine(facts) {
  if (facts.scores.length) {
    return "Tested on " + facts.scores.map(({ set, images, accuracy }) =>
      `${images.toLocaleString("en")} ${set} cells: ${plainPercent(accuracy)} right`).join(" · ");
  }
  return facts.accuracy === null ? null : `Right on ${plainPercent(facts.accuracy)} of its test images`;
}

/** "Trained on cells from: pbc (1,200 cells), chula (345 cells)." (a lab without a count by name only), or null. */
function labsLine(facts) {
  if (!facts.labs.length) return null;
  return "Trained on cells from: " + facts.labs.map(({ name, cells }) =>
    (cells === null ? name : `${name} (${howMany(cells, "cell")})`)).join(", ") + ".";
}

/**
 * "Adapted to mylab with 100 of its own labelled cells: about 87 % right on them (95 % interval 79–92 %).", the
 * parts without a value left out; null when the model was not adapted to a lab.
 */
function adaptedLine(facts) {
  const adapted = facts.adaptedTo;
  if (adapted === null) return null;
  const cells = adapted.cells === null ? "its own labelled cells"
    : `${adapted.cells.toLocaleString("en")} of its own labelled cells`;
  if (adapted.accuracy === null) return `Adapted to ${adapted.lab} with ${cells}.`;
  const interval = adapted.interval === null ? "" : ` (95\u00a0% interval ${Math.round(100 * adapted.interval[0])}` +
    `–${wholePercent(adapted.interval[1])})`;
  return `Adapted to ${adapted.lab} with ${cells}: about ${wholePercent(adapted.accuracy)} right on them${interval}.`;
}

/**
 * How to make the model work for another lab, with the commands as code; the same words as the Android app's
 * Messages.kt (ADAPT_ROUTE_TEXT) and the iOS app's ContentView.swift (adaptRouteText).
 */
function routeNodes() {
  return ["Photos from another microscope, stain or camera can get many more answers wrong. To adapt it to your " +
    "lab: label about 20 cells per class (at least 5) in one folder per class, run ",
  element("code", "bmcell finetune MODEL --data YOUR_FOLDER --out NEW_MODEL"),
  " on a computer, then export the new model to this app. ", element("code", "bmcell check MODEL --images YOUR_PHOTOS"),
  " estimates first how well it will do on your photos."];
}

/**
 * The header: "Model NAME · bmcell VERSION · model card", the precision in words, how well it did, the labs it was
 * trained on, the lab it was adapted to, that it flags pictures unlike its training cells, and how to adapt it to
 * yours.
 */
function showVersionLine(model) {
  const { facts } = model;
  const parts = [`Model ${facts.name}`];
  if (facts.version) parts.push(`bmcell ${facts.version}`);
  showLine("precision", facts.precisionWords);
  showLine("scores", scoresLine(facts));
  showLine("labs", labsLine(facts));
  showLine("adapted", adaptedLine(facts));
  showLine("flags", model.novelty ? NOVELTY_PANEL : null);
  $("route").replaceChildren(...routeNodes());
  $("route").hidden = false;
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
    `${plainPercent(confidence.threshold)}, confident from ${plainPercent(confidence.confident_from)}` +
    (typeof confidence.fitted_on === "string" ? `, fitted on: ${confidence.fitted_on}` : "")
    : "no calibrated confidence");
  rows.push(noveltyDetails(model.novelty));
  const { rule, problem } = model.labCheck;
  rows.push(rule ? `accuracy check for a batch of photos: a photo counts as right when its top probability is at ` +
    `least ${plainPercent(rule.threshold)}` + (rule.validationAccuracy === null ? "" : ` (this reproduces the ` +
    `${plainPercent(rule.validationAccuracy)} accuracy measured on its test cells)`) + `; at least ${rule.minImages} ` +
    "photos" : `no batch check: ${problem}; re-export it with this version of bmcell`);
  rows.push(`onnxruntime-web ${runtimeFacts.version} (WebAssembly, 1 thread)`);
  $("details-list").replaceChildren(...rows.map((row) => element("li", row)));
  $("details").hidden = false;
}

/** The details' line on the novelty check: from which score a picture is flagged, and how often its test cells are. */
function noveltyDetails(novelty) {
  if (novelty === null) {
    return "no check for pictures unlike the training cells: re-export it with this version of bmcell";
  }
  const share = novelty.flaggedOnValidation === null ? "" : ` (${plainPercent(novelty.flaggedOnValidation)} of its ` +
    "own test cells are flagged too)";
  return `flags a picture as \u201c${UNKNOWN_TEXT}\u201d when its distance to the nearest training cell is at least ` +
    `${times(novelty.threshold)} the usual distance${share}`;
}

// The model card's Markdown, rendered as DOM nodes whose text is always set as text (never parsed as HTML):
// headings (# to ####), paragraphs, bullet lists, tables and, inside them, `code`, **bold**, *italic* and links.
const INLINE = /`([^`]+)`|\*\*(.+?)\*\*|\*([^*\s](?:[^*]*[^*\s])?)\*|\[([^\]]+)\]\(([^()\s]+)\)/g;
const TABLE_SEPARATOR = /^\s*\|(\s*:?-+:?\s*\|)+\s*$/;

/** A Markdown link: an <a> opening a new tab for http(s) URLs; any other URL leaves its text as plain text. */
function linkNodes(text, url) {
  const children = inlineNodes(text);
  if (!/^https?:\/\//i.test(url)) return children;
  const anchor = element("a", ...children);
  Object.assign(anchor, { href: url, rel: "noopener", target: "_blank" });
  return [anchor];
}

/** One line's inline Markdown as strings and nodes. */
function inlineNodes(text) {
  const nodes = [];
  let end = 0;
  for (const match of text.matchAll(INLINE)) {
    const [whole, code, bold, italic, linkText, url] = match;
    nodes.push(text.slice(end, match.index));
    if (code !== undefined) nodes.push(element("code", code));
    else if (bold !== undefined) nodes.push(element("strong", ...inlineNodes(bold)));
    else if (italic !== undefined) nodes.push(element("em", ...inlineNodes(italic)));
    else nodes.push(...linkNodes(linkText, url));
    end = match.index + whole.length;
  }
  nodes.push(text.slice(end));
  return nodes;
}

/** The cells of a table row "| a | b |". */
const tableCells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());

/** A Markdown table (header line, separator line, body lines) in a container that scrolls sideways when wide. */
function tableNode([header, separator, ...body]) {
  const align = tableCells(separator).map((cell) => (cell.endsWith(":") ? (cell.startsWith(":") ? "center" : "right")
    : ""));
  const row = (line, tag) => element("tr", ...tableCells(line).map((text, column) => {
    const cell = element(tag, ...inlineNodes(text));
    cell.style.textAlign = align[column] ?? "";
    return cell;
  }));
  const scroller = element("div", element("table", element("thead", row(header, "th")),
    element("tbody", ...body.map((line) => row(line, "td")))));
  scroller.className = "table-scroll";
  return scroller;
}

/** Markdown as a list of block nodes; a plain line continues the paragraph or list item above it. */
function markdownNodes(markdown) {
  const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
  const nodes = [];
  let open = null; // the paragraph or list item a plain line continues
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    const bullet = /^[-*+]\s+(.*)$/.exec(line);
    if (!line) {
      open = null;
    } else if (heading) {
      nodes.push(element(`h${heading[1].length + 1}`, ...inlineNodes(heading[2])));
      open = null;
    } else if (line.startsWith("|") && TABLE_SEPARATOR.test(lines[i + 1] ?? "")) {
      let last = i + 2;
      while (last < lines.length && lines[last].trim().startsWith("|")) last++;
      nodes.push(tableNode(lines.slice(i, last)));
      i = last - 1;
      open = null;
    } else if (bullet) {
      if (nodes.at(-1)?.tagName !== "UL") nodes.push(element("ul"));
      open = element("li", ...inlineNodes(bullet[1]));
      nodes.at(-1).append(open);
    } else if (open) {
      open.append(" ", ...inlineNodes(line));
    } else {
      open = element("p", ...inlineNodes(line));
      nodes.push(open);
    }
  }
  return nodes;
}

/** Open the model card (Markdown) rendered in the page's dialog. */
async function showModelCard(url) {
  let nodes;
  try {
    nodes = markdownNodes(await (await fetchOk(url)).text());
  } catch (error) {
    nodes = [element("p", `The model card could not be read (${error.message}).`)];
  }
  $("card-text").replaceChildren(...nodes);
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
 * How sure an answer with top probability p is: "uncertain" below the threshold, "low" below confident_from, else
 * "confident" (always "confident" without a confidence block).
 */
function confidenceLevel(confidence, p) {
  if (confidence === null) return "confident";
  if (p < confidence.threshold) return "uncertain";
  return p < confidence.confident_from ? "low" : "confident";
}

/**
 * The model's output for one picture → {logits: its C class scores, novelty: the novelty score after them, null
 * without a novelty block}; an output of any other length is refused.
 */
function splitOutput(output, model) {
  const classes = model.card.classes.length;
  const problem = outputProblem(output.length, classes, model.novelty);
  if (problem) throw new Error(problem);
  return { logits: output.subarray(0, classes), novelty: model.novelty ? output[model.novelty.outputIndex] : null };
}

/**
 * The answer's level: "unknown" (does not look like a cell this model knows) when the novelty score reaches the
 * novelty threshold, whatever the probabilities; otherwise confidenceLevel's.
 */
function answerLevel(model, novelty, p) {
  if (novelty !== null && novelty >= model.novelty.threshold) return "unknown";
  return confidenceLevel(model.confidence, p);
}

/**
 * Classify one file: {probabilities, top: every class [{label, probability}], most probable first, novelty, level,
 * uncertain, unknown, image: {width, height}, crop: the uint8 CHW pixels the model sees, timing: {decode_ms,
 * preprocess_ms, model_ms, total_ms}}, or null when isStale() says a newer picture was chosen meanwhile.
 * probabilities are calibrated (softmax of the class scores / temperature) when model.json has a confidence block;
 * novelty is the model's novelty score (null without a novelty block); level is answerLevel's, uncertain and unknown
 * are true when it is "uncertain" or "unknown".
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
  const { logits, novelty } = splitOutput(ran.output[model.session.outputNames[0]].data, model);
  const probabilities = softmax(logits, confidence ? confidence.temperature : 1);
  const top = probabilities.map((probability, i) => ({ label: model.card.classes[i], probability }))
    .sort((a, b) => b.probability - a.probability);
  const level = answerLevel(model, novelty, top[0].probability);
  const timing = { decode_ms: decoded - start, preprocess_ms: preprocessed - decoded, model_ms: ran.ms,
    total_ms: performance.now() - start };
  return { probabilities, top, novelty, level, uncertain: level === "uncertain", unknown: level === "unknown",
    image: { width: image.width, height: image.height }, crop: bytes, timing };
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

/**
 * The answer box, styled by level: a class, a class marked "low confidence", "uncertain — check by eye", or "does
 * not look like a cell this model knows" with why.
 */
function showAnswer(model, level, { label, probability }) {
  const name = classLabel(model, label);
  const { confidence } = model;
  const lines = {
    confident: () => [element("strong", name), element("span", percent(probability))],
    low: () => [element("em", "low confidence — check by eye"), element("strong", name),
      element("span", `${percent(probability)}; a confident answer needs ${plainPercent(confidence.confident_from)}`)],
    uncertain: () => [element("strong", "uncertain — check by eye"), element("span", `most probable: ${name} at ` +
      `${percent(probability)}, below the ${plainPercent(confidence.threshold)} this model needs to name a cell type`)],
    unknown: () => [element("strong", UNKNOWN_TEXT), element("span", UNKNOWN_WHY)],
  }[level]();
  const answer = $("answer");
  answer.className = level;
  answer.replaceChildren(...lines);
  answer.hidden = false;
}

/** The answer, what the model saw, the time, then every class. */
function show(model, result, file) {
  showAnswer(model, result.level, result.top[0]);
  setStatus(""); // the answer says it all
  const { timing } = result;
  $("timing").textContent = `Classified in ${ms(timing.total_ms)} on this device (reading the picture ` +
    `${ms(timing.decode_ms)}, resizing ${ms(timing.preprocess_ms)}, model ${ms(timing.model_ms)}).`;
  $("timing").hidden = false;
  showLine("novelty", result.novelty === null ? null : noveltyLine(result.novelty, model.novelty.threshold));
  $("top").className = result.uncertain || result.unknown ? "secondary" : "";
  $("top").replaceChildren(...result.top.map(({ label, probability }) => {
    const bar = element("div");
    bar.className = "bar";
    bar.style.width = `${(100 * probability).toFixed(1)}%`;
    return element("li", element("strong", classLabel(model, label)), ` ${percent(probability)}`, bar);
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

/** What the page says about the model's confidence, under the answer, in plain words. */
function confidenceNote(confidence) {
  if (confidence === null) {
    return "This model's percentages are uncalibrated guesses: no answer is marked uncertain or low confidence, " +
      "so check every answer by eye.";
  }
  const threshold = plainPercent(confidence.threshold);
  const confidentFrom = plainPercent(confidence.confident_from);
  const low = confidentFrom === threshold ? "" : `${threshold} to ${confidentFrom}: low confidence — check by eye; `;
  return `The percentage says how sure the model is. From ${confidentFrom}: a confident answer; ${low}below ` +
    `${threshold}: uncertain — check by eye.`;
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
  $("novelty").hidden = true;
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

let latestBatch = 0; // only the latest batch runs on: choosing another batch stops the one before
window.bmcellBatch = null; // for tests: the latest batch's summary once it has ended (batchSummary, plus its run)

/**
 * What a batch of classified photos says: {files, read, unread: [{file, error}], photos: [{file, top, novelty, level}],
 * named: how many the model would name a cell type for (level "low" or "confident", exactly as for a single photo;
 * null without a confidence block), uncertain: how many would be "uncertain" (null likewise), answered: the share
 * named of those read, unknown: how many do not look like a cell this model knows (null without a novelty block),
 * estimate: the share whose calibrated top probability is >= the lab check's threshold (null under min_images photos
 * read)}.
 */
function batchSummary(model, files, photos, unread) {
  const read = photos.length;
  const rule = model.labCheck.rule;
  const count = (...levels) => photos.filter((photo) => levels.includes(photo.level)).length;
  const named = model.confidence === null ? null : count("low", "confident");
  const estimate = read < rule.minImages ? null : photos.filter((photo) => photo.top >= rule.threshold).length / read;
  return { files: files.length, read, unread, photos, named, uncertain: named === null ? null : count("uncertain"),
    answered: named === null || !read ? null : named / read, unknown: model.novelty ? count("unknown") : null,
    estimate };
}

/**
 * How many photos of the batch do not look like a cell this model knows, beside the share of its own test cells that
 * are flagged, and what many of them mean; null without a novelty block or a photo read.
 */
function unknownLine(model, { read, unknown }) {
  if (unknown === null || !read) return null;
  const { flaggedOnValidation } = model.novelty;
  const share = wholePercent(unknown / read) + (flaggedOnValidation === null ? ""
    : `; among its own test cells: ${wholePercent(flaggedOnValidation)}`);
  return element("p", element("strong", `${unknown} of the ${howMany(read, "photo")} do not look like a cell this ` +
    "model knows"), ` (${share}). Check them by eye; many of them mean that your cells, stain or microscope are ` +
    "unlike those it was trained on.");
}

/** The batch's outcome in plain words: what was read, what the model would answer, the estimated accuracy. */
function showBatch(model, summary) {
  const { read, unread, named, uncertain, answered, estimate, files } = summary;
  const rule = model.labCheck.rule;
  const lines = [element("p", `Read ${read} of ${howMany(files, "photo")}` +
    (unread.length ? `; could not read: ${unread.map(({ file }) => file).join(", ")}.` : "."))];
  if (unread.length) lines.push(element("ul", ...unread.map(({ error }) => element("li", error))));
  if (answered !== null) {
    lines.push(element("p", `The model would name a cell type for ${named} of them (${wholePercent(answered)}); ` +
      `${uncertain} would be \u201cuncertain \u2014 check by eye\u201d.`));
  }
  const unknownNode = unknownLine(model, summary);
  if (unknownNode) lines.push(unknownNode);
  if (estimate === null) {
    lines.push(element("p", element("strong", `Choose at least ${rule.minImages} photos for an estimate`),
      ` of its accuracy on them (${read} read).`));
  } else {
    const measured = rule.validationAccuracy === null ? "" : ` (on its own test cells it gives the ` +
      `${wholePercent(rule.validationAccuracy)} measured there)`;
    const limits = element("p", `This estimate comes from the model's own confidence alone${measured} and tends to ` +
      "be too high for photos unlike the labs it was trained on. For a measured figure, label about 20 cells per " +
      "class and run ", element("code", "bmcell finetune"), " (it measures it), or run ",
    element("code", "bmcell check"), " (it also measures how far your photos are from the cells it was trained on).");
    limits.className = "limits";
    lines.push(element("p", element("strong", `Estimated accuracy on these photos: about ${wholePercent(estimate)} ` +
      "or lower.")), limits);
  }
  $("batch-result").replaceChildren(...lines);
  $("batch-result").hidden = false;
}

/**
 * Classify a batch of photos one after the other through the single-photo path (classify), saying "12 / 40" as it
 * goes and letting the page run between photos; then show what they say. A newer batch stops this one.
 */
async function onBatch(model, files) {
  const batch = ++latestBatch;
  const isStale = () => batch !== latestBatch;
  const photos = [];
  const unread = [];
  $("batch-result").hidden = true;
  $("batch-status").className = "";
  for (const [index, file] of files.entries()) {
    $("batch-status").textContent = `Checking your photos: ${index + 1} / ${files.length}`;
    await new Promise((resolve) => { setTimeout(resolve, 0); }); // the page repaints and answers between photos
    if (isStale()) return;
    try {
      const result = await classify(model, file, isStale);
      if (result === null || isStale()) return;
      photos.push({ file: file.name, top: result.top[0].probability, novelty: result.novelty, level: result.level });
    } catch (error) {
      if (isStale()) return;
      unread.push({ file: file.name, error: error instanceof BadImageError ? error.message
        : `${file.name}: ${error.message}` });
    }
  }
  const summary = batchSummary(model, files, photos, unread);
  $("batch-status").textContent = "";
  showBatch(model, summary);
  window.bmcellBatch = { batch, ...summary };
}

/** Offer the batch check when model.json has a usable lab check; otherwise the page stays as it was. */
function setUpBatch(model) {
  if (model.labCheck.rule === null) return;
  $("batch-intro").textContent = `How well will it do on your lab's photos? Choose ${model.labCheck.rule.minImages} ` +
    "or more of them at once for an estimate.";
  $("batch").hidden = false;
  const input = $("batch-files");
  input.disabled = false;
  input.addEventListener("change", (event) => {
    const files = Array.from(event.target.files);
    event.target.value = "";
    if (files.length) {
      onBatch(model, files).catch((error) => {
        $("batch-status").textContent = `The check stopped: ${error.message}`;
        $("batch-status").className = "error";
      });
    }
  });
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
    const [runtimeFacts, { card, confidence, novelty, labCheck }] = await Promise.all([readRuntimeFacts(),
      readCard()]);
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
    checkOutput(session, card, novelty);
    const model = { card, confidence, novelty, labCheck, session, bytes, facts: modelFacts(card) };
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
    setUpBatch(model);
    // For tests and debugging: the same steps the page takes, callable with a File.
    window.bmcell = { card, confidence, novelty, labCheck: labCheck.rule, runtime: runtimeFacts,
      classify: (file) => classify(model, file), decodeRgb, unitTensor };
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

// The files the app needs to work offline, shared by app.js (imported as a module) and sw.js (importScripts).
//
// The app shell is small and asked of the server on every online load (network first, so an updated app or a newly
// installed model.json is seen at once). onnxruntime-web's runtime and the model are large and immutable under a
// versioned URL: "?v=" and the first 16 hex digits of their sha256 (from vendor/ort.json, written by `npm run setup`,
// and bmcell_model/model.json). The service worker serves those from its cache without asking the server (cache
// first); a new runtime or model has a new hash, hence a new URL, and is downloaded once.
self.bmcellAssets = (() => {
  const CACHE = "bmcell-demo-v2";
  const SHELL = [
    "./", "index.html", "style.css", "app.js", "preprocess.js", "assets.js", "manifest.webmanifest", "icon.svg",
    "icon-192.png", "icon-512.png", "vendor/ort.json", "bmcell_model/model.json",
  ];
  const RUNTIME = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
  const VERSION = /^[0-9a-f]{16}$/;

  /** path?v=<the first 16 hex digits of sha256>. */
  const versioned = (path, sha256) => `${path}?v=${String(sha256).slice(0, 16)}`;

  /** The version a versioned URL names ("" for any other URL). */
  const versionOf = (url) => {
    const version = new URL(url, self.location.href).searchParams.get("v") || "";
    return VERSION.test(version) ? version : "";
  };

  /** {file name: versioned URL} of the runtime described by vendor/ort.json. */
  function runtime(ort) {
    return Object.fromEntries(RUNTIME.map((name) => {
      const facts = ort && ort.files && ort.files[name];
      if (!facts || typeof facts.sha256 !== "string") {
        throw new Error(`vendor/ort.json does not describe ${name}: run \`npm run setup\` in web_demo`);
      }
      return [name, versioned(`vendor/${name}`, facts.sha256)];
    }));
  }

  /** The versioned URL of model.json's model file. */
  const model = (card) => versioned(`bmcell_model/${card.file}`, card.sha256);

  /** bmcell_model/<model card> when model.json names one (export/apps.py: "model": {"model_card": ...}), else null. */
  function modelCard(card) {
    const name = card && card.model && typeof card.model === "object" ? card.model.model_card : null;
    return typeof name === "string" && /^[\w.-]+$/.test(name) && !name.startsWith(".") ? `bmcell_model/${name}` : null;
  }

  /** Every URL the app needs offline: the shell, the runtime and, with a model.json, its model and model card. */
  function all(ort, card) {
    const urls = [...SHELL, ...Object.values(runtime(ort))];
    if (card && typeof card.file === "string" && typeof card.sha256 === "string") urls.push(model(card));
    const cardUrl = modelCard(card);
    if (cardUrl) urls.push(cardUrl);
    return urls;
  }

  return { CACHE, SHELL, RUNTIME, versioned, versionOf, runtime, model, modelCard, all };
})();

// Service worker: keep the page, its scripts, onnxruntime-web's WASM and bmcell_model/ so the app works offline.
// Network first (a new model installed with `bmcell export --app` is picked up on the next online load),
// the cache when offline.
const CACHE = "bmcell-demo-v1";
const FILES = [
  "./", "index.html", "style.css", "app.js", "preprocess.js", "manifest.webmanifest", "icon.svg", "icon-192.png",
  "icon-512.png", "vendor/ort.wasm.min.mjs", "vendor/ort-wasm-simd-threaded.mjs",
  "vendor/ort-wasm-simd-threaded.wasm", "bmcell_model/model.json", "bmcell_model/model.onnx",
  "bmcell_model/manifest.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(event.request);
      if (response.ok) await cache.put(event.request, response.clone());
      return response;
    } catch (error) {
      const cached = await cache.match(event.request, { ignoreSearch: true });
      if (cached) return cached;
      throw error;
    }
  })());
});

// Service worker: keeps the page, its scripts, onnxruntime-web's runtime and bmcell_model/ so the app works offline,
// and downloads the large files once.
//
// - Install: caches everything assets.js lists (the shell, the runtime and the model named by vendor/ort.json and
//   model.json). On a first visit the page waits for this before loading the runtime and the model, so each is
//   downloaded once, by this worker, and the page then reads them from the cache.
// - Versioned URLs (?v=<sha256 prefix>: the runtime and the model): cache first. A response is cached only when its
//   sha256 starts with the version; caching one deletes the other versions of the same file.
// - Everything else (the small shell, model.json): network first, so a new app or model is seen on the next online
//   load; the cache when offline.
importScripts("assets.js");
const { CACHE, all, versionOf } = self.bmcellAssets;

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Store a versioned response if its bytes match the version (then drop the file's other versions); the response. */
async function putVersioned(cache, url, response) {
  const version = versionOf(url);
  const buffer = await response.arrayBuffer();
  const copy = () => new Response(buffer, { status: response.status, statusText: response.statusText,
    headers: response.headers });
  if (!(await sha256Hex(buffer)).startsWith(version)) {
    console.warn(`${url}: its sha256 is not ${version}…; not cached`);
    return copy();
  }
  const path = new URL(url, self.location.href).pathname;
  for (const key of await cache.keys()) {
    const old = new URL(key.url);
    if (old.pathname === path && old.href !== new URL(url, self.location.href).href) await cache.delete(key);
  }
  await cache.put(url, copy());
  return copy();
}

/** Store a response; versioned ones through putVersioned. */
async function store(cache, url, response) {
  if (versionOf(url)) return putVersioned(cache, url, response);
  await cache.put(url, response.clone());
  return response;
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return { json: await response.clone().json(), response };
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    const ort = await fetchJson("vendor/ort.json");
    let card = null;
    try {
      card = await fetchJson("bmcell_model/model.json");
    } catch (error) {
      console.warn("no model to cache yet:", error.message); // the shell and the runtime are still cached
    }
    const urls = all(ort.json, card && card.json);
    const optional = self.bmcellAssets.modelCard(card && card.json); // a missing model card does not stop offline use
    await Promise.all(urls.map(async (url) => {
      if (url === "vendor/ort.json") return cache.put(url, ort.response);
      if (url === "bmcell_model/model.json") return card && cache.put(url, card.response);
      if (versionOf(url)) {
        const kept = await caches.match(url); // from an older version of this worker: not downloaded again
        if (kept) return cache.put(url, kept);
      }
      const response = await fetch(url, { cache: "no-cache" });
      if (!response.ok) {
        if (url === optional) return console.warn(`${url}: HTTP ${response.status}; not cached`);
        throw new Error(`${url}: HTTP ${response.status}`);
      }
      return store(cache, url, response);
    }));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((key) => key.startsWith("bmcell-demo") && key !== CACHE)
      .map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

/** Versioned: the cache, else the network (stored); a "reload" request (the page saw a bad hash) skips the cache. */
async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  if (request.cache !== "reload") {
    const cached = await cache.match(request);
    if (cached) return cached;
  }
  const response = await fetch(request.url, { cache: "no-cache" });
  return response.ok ? store(cache, request.url, response) : response;
}

/** The network (stored), else the cache. */
async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(request, { ignoreSearch: true })
      || (request.mode === "navigate" ? await cache.match("./") : undefined);
    if (cached) return cached;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(versionOf(request.url) ? cacheFirst(request) : networkFirst(request));
});

// npm run setup: copy onnxruntime-web's WASM build from node_modules into vendor/, write vendor/ort.json (its version
// and each file's size and sha256: the app requests the runtime under URLs versioned by these hashes, which lets the
// service worker serve it from its cache without asking the server), and draw the PNG app icons.
// Run after `npm ci`; the outputs are ignored by git (the .wasm alone is ~14 MB).
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "node_modules", "onnxruntime-web", "dist");
// ort.wasm.min.mjs is the WASM-only API; it loads the two runtime files below from env.wasm.wasmPaths.
const ORT_FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];

mkdirSync(join(root, "vendor"), { recursive: true });
const files = {};
for (const file of ORT_FILES) {
  copyFileSync(join(dist, file), join(root, "vendor", file));
  const bytes = readFileSync(join(root, "vendor", file));
  files[file] = { bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
}
const { version } = JSON.parse(readFileSync(join(dist, "..", "package.json"), "utf8"));
writeFileSync(join(root, "vendor", "ort.json"),
  JSON.stringify({ package: "onnxruntime-web", version, files }, null, 2) + "\n");

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const out = Buffer.alloc(body.length + 8);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), body.length + 4);
  return out;
}

/** The icon.svg design (a purple tile, a pale cell, a two-lobed nucleus) as an RGBA PNG of size x size. */
function iconPng(size) {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  const inCircle = (x, y, cx, cy, r) => (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0; // filter: none
    for (let x = 0; x < size; x++) {
      const [u, v] = [((x + 0.5) * 64) / size, ((y + 0.5) * 64) / size];
      let colour = [0x7b, 0x2d, 0x8e];
      if (inCircle(u, v, 32, 32, 20)) colour = [0xf3, 0xd9, 0xf7];
      if (inCircle(u, v, 27, 29, 8) || inCircle(u, v, 38, 36, 6)) colour = [0x5a, 0x1f, 0x6a];
      raw.set([...colour, 255], y * (size * 4 + 1) + 1 + x * 4);
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

for (const size of [192, 512]) writeFileSync(join(root, `icon-${size}.png`), iconPng(size));
console.log(`vendor/: ${ORT_FILES.join(", ")}, ort.json (onnxruntime-web ${version}); icon-192.png, icon-512.png`);

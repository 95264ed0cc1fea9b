// The preprocessing contract of bmcell_model/model.json, bit for bit as Python does it:
// bmcell.core.data.images.load_rgb (8-bit RGB, EXIF orientation applied, alpha composited on white), then
// bmcell.core.data.transforms.unit_transform (resize the shorter side, antialiased bilinear; centre crop; x 1/255).
//
// The resize mirrors the uint8 kernel torchvision runs on CPUs (Pillow's two-pass resampler, src/libImaging/
// Resample.c: horizontal pass, uint8 rounding, vertical pass; with torch's int16 coefficients, whose precision
// is the largest that keeps every weight under 2^15, where Pillow itself uses 22 bits). Canvas resampling would not.

export const MAX_PIXELS = 64_000_000; // as bmcell.core.data.images.MAX_PIXELS
export const MAX_FILE_BYTES = 100_000_000;

/** An input the app cannot use; the message says why. */
export class BadImageError extends Error {}

/** Pillow's alpha_composite of an RGBA pixel over opaque white (AlphaComposite.c, 7 precision bits). */
function overWhite(value, alpha) {
  const coef1 = Math.floor((alpha * 255 * 255 * 128) / (255 * 255)); // outa255 is 255*255 over opaque white
  const coef2 = 255 * 128 - coef1;
  const tmp = value * coef1 + 255 * coef2 + (0x80 << 7);
  return (((tmp >> 8) + tmp) >> 8) >> 7;
}

/** RGBA bytes (not premultiplied) to RGB bytes, composited on white like load_rgb. */
export function rgbaToRgb(rgba) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const alpha = rgba[i + 3];
    for (let c = 0; c < 3; c++) {
      rgb[j + c] = alpha === 255 ? rgba[i + c] : alpha === 0 ? 255 : overWhite(rgba[i + c], alpha);
    }
  }
  return rgb;
}

/** Whether a file is a TIFF (or BigTIFF) by its first four bytes: most browsers cannot decode one. */
async function isTiff(blob) {
  const magic = String.fromCharCode(...new Uint8Array(await blob.slice(0, 4).arrayBuffer()));
  return /^(II[*+]\0|MM\0[*+])$/.test(magic);
}

/** Decode a File/Blob with the browser into {width, height, rgb}, or throw BadImageError saying why. */
export async function decodeRgb(blob, name = blob.name || "image") {
  if (!blob.size) throw new BadImageError(`${name}: empty file (0 bytes)`);
  if (blob.size > MAX_FILE_BYTES) {
    throw new BadImageError(`${name}: ${(blob.size / 1e6).toFixed(0)} MB is too large; crop or downscale it first`);
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none",
    });
  } catch {
    throw new BadImageError(await isTiff(blob)
      ? `${name}: TIFF pictures are not read by this browser (most browsers do not read TIFF); convert it to PNG or ` +
        "JPEG first, or classify it on a computer with `bmcell predict`"
      : `${name}: not an image this browser can read (jpg, png, webp or bmp expected)`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new BadImageError(`${name}: ${width}x${height} pixels exceeds the ${MAX_PIXELS.toLocaleString("en")}` +
      "-pixel limit; crop or downscale it first");
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { width, height, rgb: rgbaToRgb(context.getImageData(0, 0, width, height).data) };
}

/** Per output pixel: first input index, tap count and int16 weights (torch's _compute_index_ranges_int16_weights). */
export function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = 1.0 * filterScale; // bilinear support is 1
  const invScale = 1.0 / filterScale;
  const taps = [];
  let maxWeight = 0;
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - first;
    const weights = [];
    let total = 0;
    for (let k = 0; k < count; k++) {
      const w = Math.max(0, 1.0 - Math.abs((k + first - center + 0.5) * invScale));
      weights.push(w);
      total += w;
    }
    for (let k = 0; k < count; k++) {
      if (total !== 0) weights[k] /= total;
      maxWeight = Math.max(maxWeight, weights[k]);
    }
    taps.push({ first, count, weights });
  }
  let precision = 0;
  for (; precision < 22; precision++) {
    if (Math.trunc(0.5 + maxWeight * 2 ** (precision + 1)) >= 1 << 15) break;
  }
  for (const tap of taps) {
    tap.weights = Int32Array.from(tap.weights, (w) => Math.trunc(w * 2 ** precision + (w < 0 ? -0.5 : 0.5)));
  }
  return { taps, precision };
}

/** One resampling pass along x (axis 0) or y (axis 1) of an interleaved RGB uint8 image. */
function resamplePass(rgb, width, height, outSize, axis) {
  const [inSize, lines] = axis === 0 ? [width, height] : [height, width];
  const { taps, precision } = coefficients(inSize, outSize);
  const [outWidth, outHeight] = axis === 0 ? [outSize, height] : [width, outSize];
  const out = new Uint8Array(outWidth * outHeight * 3);
  const step = axis === 0 ? 3 : width * 3; // input stride along the resampled axis
  const half = 2 ** (precision - 1);
  const divisor = 2 ** precision;
  for (let line = 0; line < lines; line++) {
    for (let o = 0; o < outSize; o++) {
      const { first, count, weights } = taps[o];
      const base = axis === 0 ? line * width * 3 + first * 3 : first * width * 3 + line * 3;
      const target = axis === 0 ? (line * outWidth + o) * 3 : (o * outWidth + line) * 3;
      for (let c = 0; c < 3; c++) {
        let sum = half;
        for (let k = 0; k < count; k++) sum += rgb[base + k * step + c] * weights[k];
        out[target + c] = Math.min(255, Math.max(0, Math.floor(sum / divisor)));
      }
    }
  }
  return { rgb: out, width: outWidth, height: outHeight };
}

/** Python's round(): halves go to the even neighbour (torchvision's centre crop uses it). */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  if (x - floor !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

const SCALE = Math.fround(1 / 255);
const UNIT = Float32Array.from({ length: 256 }, (_, v) => Math.fround(v * SCALE)); // float32 v * float32(1/255)

/** unit_transform: {width, height, rgb} to a Float32Array 1x3xSxS in [0, 1] (NCHW), plus the uint8 crop. */
export function unitTensor(image, size) {
  let { width, height, rgb } = image;
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((size * long) / short);
  const [newWidth, newHeight] = width <= height ? [size, newLong] : [newLong, size];
  if (newWidth !== width || newHeight !== height) {
    if (newWidth !== width) ({ rgb, width, height } = resamplePass(rgb, width, height, newWidth, 0));
    if (newHeight !== height) ({ rgb, width, height } = resamplePass(rgb, width, height, newHeight, 1));
  }
  const top = roundHalfEven((height - size) / 2);
  const left = roundHalfEven((width - size) / 2);
  const tensor = new Float32Array(3 * size * size);
  const bytes = new Uint8Array(3 * size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const source = ((y + top) * width + (x + left)) * 3;
      for (let c = 0; c < 3; c++) {
        const index = c * size * size + y * size + x;
        bytes[index] = rgb[source + c];
        tensor[index] = UNIT[rgb[source + c]];
      }
    }
  }
  return { tensor, bytes };
}

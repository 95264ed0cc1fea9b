package org.bmcell.demo

// The arithmetic of the preprocessing contract, bit for bit as Python does it, in plain Kotlin (no Android
// imports) so that tests/test_android_jvm.py compiles and runs it on a JVM against tests/contract/preprocessing.json.
// Preprocessing.kt (the Android layer) decodes the picture and reads its EXIF orientation, then calls this file.
//
//   bmcell/core/data/images.py::load_rgb ............ uprightRgb(): EXIF orientation as PIL's exif_transpose, alpha
//                                                      composited on white as Pillow's alpha_composite
//   bmcell/core/data/transforms.py::unit_transform .. resizeShorterSide(), centerCrop(), toTensor()
//
// The resize is a transcription of web_demo/preprocess.js, which mirrors the uint8 kernel torchvision runs on CPUs
// (torch's _upsample_bilinear2d_aa for uint8: Pillow's two-pass resampler, src/libImaging/Resample.c, horizontal
// pass, uint8 rounding, vertical pass, with torch's int16 fixed-point coefficients from
// _compute_index_ranges_int16_weights). Same operations in the same order, double precision where torch and the
// JavaScript use it, integers where they use integers: the output bytes are identical, not merely close.

/** An 8-bit RGB picture: width x height pixels, interleaved R, G, B bytes, row by row, no alpha. */
class RgbImage(val width: Int, val height: Int, val rgb: ByteArray) {
    init {
        require(width > 0 && height > 0 && rgb.size.toLong() == 3L * width * height) {
            "RgbImage ${width}x$height needs ${3L * width * height} bytes, got ${rgb.size}"
        }
    }

    /** Channel c (0 = R, 1 = G, 2 = B) of pixel (x, y), 0..255. */
    fun channel(x: Int, y: Int, c: Int): Int = rgb[(y * width + x) * 3 + c].toInt() and 0xFF
}

/** model.json's "preprocessing": how to turn a decoded RGB picture into the input tensor. */
data class PreprocessingSpec(
    val resizeShorterSideTo: Int,
    val centerCrop: Int,
    val interpolation: String,
    val antialias: Boolean,
    val scale: Float,
    val mean: FloatArray?, // null for bmcell exports: normalisation is inside the graph
    val std: FloatArray?,
)

/** The model's input (1 x 3 x S x S float32, NCHW) and the S x S picture it was made from. */
class UnitTensor(val tensor: FloatArray, val crop: RgbImage)

object PreprocessCore {

    /** EXIF orientations (TIFF tag 0x0112); the same numbers as androidx ExifInterface.ORIENTATION_*. */
    const val ORIENTATION_NORMAL = 1
    const val ORIENTATION_FLIP_HORIZONTAL = 2
    const val ORIENTATION_ROTATE_180 = 3
    const val ORIENTATION_FLIP_VERTICAL = 4
    const val ORIENTATION_TRANSPOSE = 5
    const val ORIENTATION_ROTATE_90 = 6 // shown rotated 90 degrees clockwise
    const val ORIENTATION_TRANSVERSE = 7
    const val ORIENTATION_ROTATE_270 = 8

    // ---- load_rgb: orientation and alpha on white -------------------------------------------------------------

    /** Pillow's alpha_composite of a channel value with alpha over opaque white (AlphaComposite.c, 7 bits). */
    fun overWhite(value: Int, alpha: Int): Int {
        val coef1 = alpha * 255 * 255 * 128 / (255 * 255) // outa255 is 255 * 255 over opaque white
        val coef2 = 255 * 128 - coef1
        val tmp = value * coef1 + 255 * coef2 + (0x80 shl 7)
        return (((tmp shr 8) + tmp) shr 8) shr 7
    }

    /**
     * Decoded RGBA bytes (not premultiplied, R, G, B, A per pixel, rows rowBytes apart, as stored in the file) →
     * the upright RGB picture load_rgb returns: EXIF orientation applied like PIL's ImageOps.exif_transpose, alpha
     * composited on white like Image.alpha_composite(white, rgba). Orientations other than 1-8 leave it as stored.
     */
    fun uprightRgb(rgba: ByteArray, width: Int, height: Int, rowBytes: Int, orientation: Int): RgbImage {
        require(width > 0 && height > 0 && rowBytes >= 4 * width && rgba.size.toLong() >= rowBytes.toLong() * (height - 1) + 4L * width) {
            "RGBA buffer of ${rgba.size} bytes does not hold ${width}x$height pixels at $rowBytes bytes a row"
        }
        val swap = orientation in ORIENTATION_TRANSPOSE..ORIENTATION_ROTATE_270 // output is height x width
        val outWidth = if (swap) height else width
        val outHeight = if (swap) width else height
        // The source pixel of output (x, y) is at start + x * stepX + y * stepY (bytes), for each of PIL's transposes:
        // 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90.
        val right = 4 * (width - 1) // byte offset of the last column
        val bottom = rowBytes * (height - 1) // byte offset of the last row
        val (start, stepX, stepY) = when (orientation) {
            ORIENTATION_FLIP_HORIZONTAL -> Triple(right, -4, rowBytes) // (W-1-x, y)
            ORIENTATION_ROTATE_180 -> Triple(right + bottom, -4, -rowBytes) // (W-1-x, H-1-y)
            ORIENTATION_FLIP_VERTICAL -> Triple(bottom, 4, -rowBytes) // (x, H-1-y)
            ORIENTATION_TRANSPOSE -> Triple(0, rowBytes, 4) // (y, x)
            ORIENTATION_ROTATE_90 -> Triple(bottom, -rowBytes, 4) // (y, H-1-x)
            ORIENTATION_TRANSVERSE -> Triple(right + bottom, -rowBytes, -4) // (W-1-y, H-1-x)
            ORIENTATION_ROTATE_270 -> Triple(right, rowBytes, -4) // (W-1-y, x)
            else -> Triple(0, 4, rowBytes) // (x, y)
        }
        val out = ByteArray(3 * outWidth * outHeight)
        var target = 0
        for (y in 0 until outHeight) {
            var source = start + y * stepY
            for (x in 0 until outWidth) {
                val alpha = rgba[source + 3].toInt() and 0xFF
                for (c in 0 until 3) {
                    val value = rgba[source + c].toInt() and 0xFF
                    out[target + c] = when (alpha) {
                        255 -> value
                        0 -> 255
                        else -> overWhite(value, alpha)
                    }.toByte()
                }
                target += 3
                source += stepX
            }
        }
        return RgbImage(outWidth, outHeight, out)
    }

    // ---- unit_transform step 1: resize the shorter side to S, bilinear, antialiased ---------------------------

    /** torchvision's Resize(S) output size for an int S: shorter side S, longer int(S * long / short). */
    fun resizedSize(width: Int, height: Int, size: Int): Pair<Int, Int> {
        val short = minOf(width, height)
        val long = maxOf(width, height)
        val newLong = (size.toDouble() * long / short).toInt()
        return if (width <= height) size to newLong else newLong to size
    }

    /**
     * Per output pixel: first input index, tap count and int16 fixed-point weights with `precision` fraction bits
     * (torch's _compute_index_ranges_int16_weights with the antialiased bilinear filter, support 1 x shrink factor).
     */
    class Coefficients(val first: IntArray, val count: IntArray, val weights: Array<IntArray>, val precision: Int)

    fun coefficients(inSize: Int, outSize: Int): Coefficients {
        val scale = inSize.toDouble() / outSize
        val filterScale = maxOf(scale, 1.0)
        val support = 1.0 * filterScale // bilinear support is 1
        val invScale = 1.0 / filterScale
        val first = IntArray(outSize)
        val count = IntArray(outSize)
        val real = arrayOfNulls<DoubleArray>(outSize)
        var maxWeight = 0.0
        for (out in 0 until outSize) {
            val center = (out + 0.5) * scale
            val lo = maxOf((center - support + 0.5).toInt(), 0) // toInt truncates toward zero, as C's cast
            val n = minOf((center + support + 0.5).toInt(), inSize) - lo
            val weights = DoubleArray(n)
            var total = 0.0
            for (k in 0 until n) {
                val w = maxOf(0.0, 1.0 - Math.abs(((k + lo) - center + 0.5) * invScale))
                weights[k] = w
                total += w
            }
            for (k in 0 until n) {
                if (total != 0.0) weights[k] /= total
                maxWeight = maxOf(maxWeight, weights[k])
            }
            first[out] = lo
            count[out] = n
            real[out] = weights
        }
        var precision = 0
        while (precision < 22) {
            if ((0.5 + maxWeight * (1 shl (precision + 1))).toInt() >= (1 shl 15)) break
            precision++
        }
        val unit = (1 shl precision).toDouble()
        val fixed = Array(outSize) { out ->
            val weights = real[out]!!
            IntArray(weights.size) { k ->
                val w = weights[k]
                (w * unit + if (w < 0) -0.5 else 0.5).toInt()
            }
        }
        return Coefficients(first, count, fixed, precision)
    }

    /** One resampling pass along x (axis 0) or y (axis 1): int32 sums from half a unit, shift, clamp to 0..255. */
    private fun resamplePass(image: RgbImage, outSize: Int, axis: Int): RgbImage {
        val width = image.width
        val height = image.height
        val inSize = if (axis == 0) width else height
        val lines = if (axis == 0) height else width
        val taps = coefficients(inSize, outSize)
        val outWidth = if (axis == 0) outSize else width
        val outHeight = if (axis == 0) height else outSize
        val rgb = image.rgb
        val out = ByteArray(3 * outWidth * outHeight)
        val step = if (axis == 0) 3 else 3 * width // input stride along the resampled axis
        val precision = taps.precision
        val half = 1 shl (precision - 1)
        for (line in 0 until lines) {
            for (o in 0 until outSize) {
                val lo = taps.first[o]
                val n = taps.count[o]
                val weights = taps.weights[o]
                val base = if (axis == 0) 3 * (line * width + lo) else 3 * (lo * width + line)
                val target = if (axis == 0) 3 * (line * outWidth + o) else 3 * (o * outWidth + line)
                for (c in 0 until 3) {
                    var sum = half
                    var index = base + c
                    for (k in 0 until n) {
                        sum += (rgb[index].toInt() and 0xFF) * weights[k]
                        index += step
                    }
                    out[target + c] = minOf(255, maxOf(0, sum shr precision)).toByte()
                }
            }
        }
        return RgbImage(outWidth, outHeight, out)
    }

    /** v2.Resize(S, bilinear, antialias=True) on uint8: the horizontal pass, then the vertical one, each if needed. */
    fun resizeShorterSide(image: RgbImage, size: Int): RgbImage {
        require(size > 0) { "resize to $size" }
        val (newWidth, newHeight) = resizedSize(image.width, image.height, size)
        var out = image
        if (newWidth != out.width) out = resamplePass(out, newWidth, 0)
        if (newHeight != out.height) out = resamplePass(out, newHeight, 1)
        return out
    }

    // ---- unit_transform step 2: centre crop ---------------------------------------------------------------------

    /** torchvision's center_crop offsets: int(round((h - S) / 2.0)), Python's round() (half to even) = Math.rint. */
    fun cropOffset(length: Int, size: Int): Int = Math.rint((length - size) / 2.0).toInt()

    fun centerCrop(image: RgbImage, size: Int): RgbImage {
        require(image.width >= size && image.height >= size) { "crop $size is larger than ${image.width}x${image.height}" }
        val top = cropOffset(image.height, size)
        val left = cropOffset(image.width, size)
        val out = ByteArray(3 * size * size)
        for (y in 0 until size) {
            System.arraycopy(image.rgb, 3 * ((top + y) * image.width + left), out, 3 * y * size, 3 * size)
        }
        return RgbImage(size, size, out)
    }

    // ---- unit_transform step 3: x scale (float32), optional mean/std, NCHW ---------------------------------------

    /** The crop as 3 x H x W bytes, planes R, G, B (what tests/contract/preprocessing.json hashes). */
    fun chwBytes(image: RgbImage): ByteArray {
        val plane = image.width * image.height
        val out = ByteArray(3 * plane)
        for (i in 0 until plane) for (c in 0 until 3) out[c * plane + i] = image.rgb[3 * i + c]
        return out
    }

    /**
     * v2.ToDtype(float32, scale=True): each byte times float32 scale (float32(1/255): one IEEE float32 multiply, as
     * torch), NCHW planes R, G, B; then (x - mean) / std per channel when model.json gives them.
     */
    fun toTensor(image: RgbImage, scale: Float, mean: FloatArray?, std: FloatArray?): FloatArray {
        val plane = image.width * image.height
        val out = FloatArray(3 * plane)
        for (i in 0 until plane) {
            for (c in 0 until 3) out[c * plane + i] = (image.rgb[3 * i + c].toInt() and 0xFF) * scale
        }
        if (mean != null && std != null) {
            for (c in 0 until 3) for (i in 0 until plane) out[c * plane + i] = (out[c * plane + i] - mean[c]) / std[c]
        }
        return out
    }

    /** unit_transform for model.json's preprocessing: resize, centre crop, scale (and normalise if asked). */
    fun unitTensor(image: RgbImage, spec: PreprocessingSpec): UnitTensor {
        val resized = resizeShorterSide(image, spec.resizeShorterSideTo)
        val crop = centerCrop(resized, spec.centerCrop)
        return UnitTensor(toTensor(crop, spec.scale, spec.mean, spec.std), crop)
    }
}

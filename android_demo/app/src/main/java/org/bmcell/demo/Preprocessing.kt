package org.bmcell.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Matrix
import android.net.Uri
import androidx.exifinterface.media.ExifInterface
import java.io.FileNotFoundException
import java.io.IOException
import java.io.InputStream
import kotlin.math.abs
import kotlin.math.max
import kotlin.math.min

/**
 * The preprocessing contract of every bmcell artefact, written out step by step. It follows model.json's
 * "preprocessing"; the Python reference is bmcell/core/data/transforms.py::unit_transform (resize, crop, scale), fed by
 * bmcell/core/data/images.py::decode_rgb (8-bit RGB, EXIF orientation, alpha on white).
 *
 *   1. decode to 8-bit ............................ decode(): BitmapFactory, ARGB_8888
 *   2. apply the EXIF orientation ................. decode(): ExifInterface → Matrix, like PIL's ImageOps.exif_transpose
 *   3. RGB: alpha composited on white,
 *      grayscale expanded to R = G = B ............ decode(): drawn over white; BitmapFactory already expands gray
 *   4. resize the shorter side to S, bilinear,
 *      antialiased (torchvision v2.Resize) ........ resizeShorterSide(): PIL's separable triangle filter
 *   5. centre-crop S x S (v2.CenterCrop) .......... centerCrop(): offsets rounded half-to-even, as Python's round()
 *   6. x * scale (1/255, v2.ToDtype scale=True),
 *      then (x - mean) / std if model.json has them ... toTensor() (bmcell exports: null, the graph normalises)
 *   7. NCHW float32, channels R, G, B ............. toTensor()
 *
 * Known difference from Python: a photo whose shorter side is at least 2 S is first reduced by the decoder
 * (inSampleSize, a power of two), so a 50-megapixel photo never fills memory, and step 4 starts from that reduced
 * picture; Python resizes from full resolution. Pictures under 2 S on their shorter side (PBC cells are 360x363)
 * are decoded at full size, and steps 4-7 then match torchvision to within one grey level after rounding.
 */
object Preprocessing {

    /** A decoded picture's pixels, 0xAARRGGBB with alpha 255 (after step 3). */
    class RgbImage(val width: Int, val height: Int, val pixels: IntArray) {
        fun toBitmap(): Bitmap = Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888)
    }

    /** The model's input, the S x S picture it was made from (shown in the UI) and the source size. */
    class Prepared(val tensor: FloatArray, val crop: RgbImage, val sourceWidth: Int, val sourceHeight: Int)

    /** After inSampleSize a picture larger than this is refused (only extreme aspect ratios get here). */
    private const val MAX_DECODED_PIXELS = 16_000_000L

    /** Steps 1-7 for one picture. Throws BadImageError with the reason for anything it cannot use. */
    fun prepare(resolver: ContentResolver, uri: Uri, spec: PreprocessingSpec): Prepared {
        val decoded = decode(resolver, uri, spec.resizeShorterSideTo)
        val rgb = decoded.image
        val resized = resizeShorterSide(rgb, spec.resizeShorterSideTo, spec.antialias)
        val crop = centerCrop(resized, spec.centerCrop)
        return Prepared(toTensor(crop, spec), crop, decoded.sourceWidth, decoded.sourceHeight)
    }

    class Decoded(val image: RgbImage, val sourceWidth: Int, val sourceHeight: Int)

    // ---- Steps 1-3: decode, orientation, RGB on white --------------------------------------------------------

    fun decode(resolver: ContentResolver, uri: Uri, minShorterSide: Int): Decoded {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open(resolver, uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        val width = bounds.outWidth
        val height = bounds.outHeight
        if (width <= 0 || height <= 0) {
            throw BadImageError("not an image Android can decode (JPEG, PNG, WebP, BMP, GIF or HEIF expected)")
        }
        val sample = sampleSize(width, height, minShorterSide)
        if ((width / sample).toLong() * (height / sample) > MAX_DECODED_PIXELS) {
            throw BadImageError("${width}x$height pixels is too elongated to decode safely; crop it first")
        }
        val options = BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888 // 8 bits per channel; gray and palette images expand to RGB
        }
        val bitmap: Bitmap? = try {
            open(resolver, uri).use { BitmapFactory.decodeStream(it, null, options) }
        } catch (error: OutOfMemoryError) {
            throw BadImageError("${width}x$height pixels does not fit in memory")
        }
        if (bitmap == null) throw BadImageError("cannot decode it: the file may be truncated or corrupt")

        val orientation = open(resolver, uri).use { exifOrientation(it) }
        val oriented = applyOrientation(bitmap, orientation)
        return Decoded(onWhite(oriented), width, height)
    }

    /** The largest power of two that keeps the decoded shorter side at least minShorterSide. */
    fun sampleSize(width: Int, height: Int, minShorterSide: Int): Int {
        var sample = 1
        while (min(width, height) / (sample * 2) >= minShorterSide) sample *= 2
        return sample
    }

    private fun open(resolver: ContentResolver, uri: Uri): InputStream = try {
        resolver.openInputStream(uri) ?: throw BadImageError("cannot open $uri")
    } catch (error: FileNotFoundException) {
        throw BadImageError("cannot read it (${error.message})")
    } catch (error: SecurityException) {
        throw BadImageError("no permission to read it (${error.message})")
    }

    private fun exifOrientation(input: InputStream): Int = try {
        ExifInterface(input).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
    } catch (error: IOException) {
        ExifInterface.ORIENTATION_NORMAL // no readable EXIF: keep the picture as stored
    }

    /** The 8 EXIF orientations as the transform that shows the picture upright (PIL's exif_transpose). */
    fun applyOrientation(bitmap: Bitmap, orientation: Int): Bitmap {
        val matrix = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> matrix.setScale(-1f, 1f)
            ExifInterface.ORIENTATION_ROTATE_180 -> matrix.setRotate(180f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> matrix.setScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { matrix.setRotate(90f); matrix.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_90 -> matrix.setRotate(90f)
            ExifInterface.ORIENTATION_TRANSVERSE -> { matrix.setRotate(-90f); matrix.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_270 -> matrix.setRotate(-90f)
            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, matrix, false)
    }

    /** Composite on opaque white (PIL: Image.alpha_composite(white, rgba)); an opaque picture is unchanged. */
    fun onWhite(bitmap: Bitmap): RgbImage {
        val opaque = Bitmap.createBitmap(bitmap.width, bitmap.height, Bitmap.Config.ARGB_8888)
        Canvas(opaque).apply {
            drawColor(Color.WHITE)
            drawBitmap(bitmap, 0f, 0f, null)
        }
        val pixels = IntArray(opaque.width * opaque.height)
        opaque.getPixels(pixels, 0, opaque.width, 0, 0, opaque.width, opaque.height)
        return RgbImage(opaque.width, opaque.height, pixels)
    }

    // ---- Step 4: resize the shorter side to S, bilinear, antialiased -----------------------------------------

    /**
     * torchvision's Resize(S) for an int S: the shorter side becomes S and the longer int(S * long / short).
     * The filter is PIL's bilinear: a triangle of radius 1 source pixel, widened by the shrink factor when
     * antialias is on, applied horizontally then vertically with rounding to 8 bits in between.
     */
    fun resizeShorterSide(image: RgbImage, size: Int, antialias: Boolean): RgbImage {
        val (width, height) = if (image.width <= image.height) {
            size to (size.toLong() * image.height / image.width).toInt()
        } else {
            (size.toLong() * image.width / image.height).toInt() to size
        }
        var out = image
        if (width != out.width) out = resampleRows(out, width, antialias)
        if (height != out.height) out = resampleColumns(out, height, antialias)
        return out
    }

    /** Source span and normalised weights of every output pixel along one axis (PIL's precompute_coeffs). */
    private class Taps(val start: IntArray, val weights: Array<DoubleArray>)

    private fun taps(inSize: Int, outSize: Int, antialias: Boolean): Taps {
        val scale = inSize.toDouble() / outSize
        val filterScale = if (antialias) max(scale, 1.0) else 1.0
        val support = 1.0 * filterScale // the triangle's radius in source pixels
        val start = IntArray(outSize)
        val weights = Array(outSize) { i ->
            val center = (i + 0.5) * scale
            val lo = max((center - support + 0.5).toInt(), 0)
            val hi = min((center + support + 0.5).toInt(), inSize)
            val w = DoubleArray(hi - lo) { j -> triangle((j + lo - center + 0.5) / filterScale) }
            val total = w.sum()
            if (total > 0) for (j in w.indices) w[j] /= total
            start[i] = lo
            w
        }
        return Taps(start, weights)
    }

    private fun triangle(x: Double): Double = max(0.0, 1.0 - abs(x))

    private fun resampleRows(image: RgbImage, outWidth: Int, antialias: Boolean): RgbImage {
        val taps = taps(image.width, outWidth, antialias)
        val out = IntArray(outWidth * image.height)
        for (y in 0 until image.height) {
            val row = y * image.width
            for (x in 0 until outWidth) {
                out[y * outWidth + x] = blend(image.pixels, taps.weights[x]) { j -> row + taps.start[x] + j }
            }
        }
        return RgbImage(outWidth, image.height, out)
    }

    private fun resampleColumns(image: RgbImage, outHeight: Int, antialias: Boolean): RgbImage {
        val taps = taps(image.height, outHeight, antialias)
        val out = IntArray(image.width * outHeight)
        for (y in 0 until outHeight) {
            for (x in 0 until image.width) {
                out[y * image.width + x] = blend(image.pixels, taps.weights[y]) { j -> (taps.start[y] + j) * image.width + x }
            }
        }
        return RgbImage(image.width, outHeight, out)
    }

    private inline fun blend(pixels: IntArray, weights: DoubleArray, index: (Int) -> Int): Int {
        var r = 0.0
        var g = 0.0
        var b = 0.0
        for (j in weights.indices) {
            val p = pixels[index(j)]
            val k = weights[j]
            r += k * ((p shr 16) and 0xFF)
            g += k * ((p shr 8) and 0xFF)
            b += k * (p and 0xFF)
        }
        return (0xFF shl 24) or (to8Bit(r) shl 16) or (to8Bit(g) shl 8) or to8Bit(b)
    }

    private fun to8Bit(value: Double): Int = min(255, max(0, (value + 0.5).toInt()))

    // ---- Step 5: centre crop ---------------------------------------------------------------------------------

    /** torchvision's center_crop: top = int(round((h - S) / 2)), left likewise; Math.rint rounds half to even. */
    fun centerCrop(image: RgbImage, size: Int): RgbImage {
        require(image.width >= size && image.height >= size) { "crop $size is larger than ${image.width}x${image.height}" }
        val top = Math.rint((image.height - size) / 2.0).toInt()
        val left = Math.rint((image.width - size) / 2.0).toInt()
        val out = IntArray(size * size)
        for (y in 0 until size) {
            System.arraycopy(image.pixels, (top + y) * image.width + left, out, y * size, size)
        }
        return RgbImage(size, size, out)
    }

    // ---- Steps 6-7: scale, optional mean/std, NCHW float32 ---------------------------------------------------

    fun toTensor(image: RgbImage, spec: PreprocessingSpec): FloatArray {
        val plane = image.width * image.height
        val out = FloatArray(3 * plane)
        for (i in 0 until plane) {
            val p = image.pixels[i]
            out[i] = ((p shr 16) and 0xFF) * spec.scale
            out[plane + i] = ((p shr 8) and 0xFF) * spec.scale
            out[2 * plane + i] = (p and 0xFF) * spec.scale
        }
        val mean = spec.mean
        val std = spec.std
        if (mean != null && std != null) {
            for (c in 0 until 3) for (i in 0 until plane) out[c * plane + i] = (out[c * plane + i] - mean[c]) / std[c]
        }
        return out
    }
}

/** A picture the app cannot use, with the reason. */
class BadImageError(message: String) : Exception(message)

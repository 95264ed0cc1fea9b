package org.bmcell.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import androidx.exifinterface.media.ExifInterface
import java.io.FileNotFoundException
import java.io.IOException
import java.io.InputStream
import java.nio.ByteBuffer

/**
 * The preprocessing contract of every bmcell artefact, written out step by step. It follows model.json's
 * "preprocessing"; the Python reference is bmcell/core/data/transforms.py::unit_transform (resize, crop, scale), fed by
 * bmcell/core/data/images.py::decode_rgb (8-bit RGB, EXIF orientation, alpha on white).
 *
 * This file is the Android layer: decoding and the EXIF tag. All arithmetic is in PreprocessCore.kt (plain Kotlin,
 * run on a JVM against the golden vectors by tests/test_android_jvm.py):
 *
 *   1. decode to 8-bit RGBA, not premultiplied ..... decode(): BitmapFactory, ARGB_8888, inPremultiplied = false,
 *                                                     raw bytes in the file's own colour space (as PIL: no ICC)
 *   2. apply the EXIF orientation ................. decode(): ExifInterface tag → PreprocessCore.uprightRgb
 *   3. RGB: alpha composited on white (onWhite),
 *      grayscale expanded to R = G = B ............ PreprocessCore.uprightRgb (Pillow's alpha_composite arithmetic);
 *                                                     BitmapFactory already expands gray
 *   4. resize the shorter side to S, bilinear,
 *      antialiased (torchvision v2.Resize) ........ PreprocessCore.resizeShorterSide (torch's uint8 kernel, int16 weights)
 *   5. centre-crop S x S (v2.CenterCrop) .......... PreprocessCore.centerCrop: offsets rounded half to even (Math.rint)
 *   6. x * scale (1/255, v2.ToDtype scale=True),
 *      then (x - mean) / std if model.json has them ... PreprocessCore.toTensor (bmcell exports: null, the graph normalises)
 *   7. NCHW float32, channels R, G, B ............. PreprocessCore.toTensor
 *
 * Steps 2-7 give exactly the bytes and float32 values Python gives for the same decoded pixels (tested on a JVM).
 * Two things only a device shows: that Android's decoders return the same pixels as Pillow's (libjpeg-turbo on both,
 * but its IDCT and chroma upsampling are build options), and the one deliberate difference: a picture of more than
 * EXACT_MAX_PIXELS (16 megapixels) is reduced by the decoder (inSampleSize, a power of two, never below S on the
 * shorter side) so that it fits in memory, and step 4 then starts from that reduced picture where Python resizes
 * from full resolution. A 12-megapixel phone photo (4000x3000) and every PBC cell (360x363) are decoded in full.
 */
object Preprocessing {

    /** The model's input, the S x S picture it was made from (shown in the UI) and the source size. */
    class Prepared(val tensor: FloatArray, val crop: RgbImage, val sourceWidth: Int, val sourceHeight: Int,
                   val sampleSize: Int)

    /** Pictures up to this many pixels are decoded in full (exactly as Python); larger ones are reduced on decode. */
    const val EXACT_MAX_PIXELS = 16_000_000L

    /** Steps 1-7 for one picture. Throws BadImageError with the reason for anything it cannot use. */
    fun prepare(resolver: ContentResolver, uri: Uri, spec: PreprocessingSpec): Prepared {
        val decoded = decode(resolver, uri, spec.resizeShorterSideTo)
        val unit = try {
            PreprocessCore.unitTensor(decoded.image, spec)
        } catch (error: OutOfMemoryError) {
            throw BadImageError("${decoded.sourceWidth}x${decoded.sourceHeight} pixels does not fit in memory; " +
                "crop or downscale it first")
        }
        return Prepared(unit.tensor, unit.crop, decoded.sourceWidth, decoded.sourceHeight, decoded.sampleSize)
    }

    class Decoded(val image: RgbImage, val sourceWidth: Int, val sourceHeight: Int, val sampleSize: Int)

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
        if ((width / sample).toLong() * (height / sample) > EXACT_MAX_PIXELS) {
            throw BadImageError("${width}x$height pixels is too elongated to decode safely; crop it first")
        }
        val options = BitmapFactory.Options().apply {
            inSampleSize = sample // 1 (full resolution, exact) unless the picture has more than EXACT_MAX_PIXELS
            inPreferredConfig = Bitmap.Config.ARGB_8888 // 8 bits per channel; gray and palette images expand to RGB
            inPremultiplied = false // the stored RGBA values, for Pillow's compositing on white (step 3)
            inScaled = false
        }
        val orientation = open(resolver, uri).use { exifOrientation(it) }
        return try {
            val bitmap: Bitmap = open(resolver, uri).use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw BadImageError("cannot decode it: the file may be truncated or corrupt")
            val rgba = rawRgba(bitmap)
            val image = PreprocessCore.uprightRgb(rgba.bytes, rgba.width, rgba.height, rgba.rowBytes, orientation)
            Decoded(image, width, height, sample)
        } catch (error: OutOfMemoryError) {
            throw BadImageError("${width}x$height pixels does not fit in memory; crop or downscale it first")
        }
    }

    /**
     * 1 (decode in full) up to EXACT_MAX_PIXELS; above, the smallest power of two that brings the picture under it
     * without taking the shorter side below minShorterSide.
     */
    fun sampleSize(width: Int, height: Int, minShorterSide: Int): Int {
        var sample = 1
        while ((width / sample).toLong() * (height / sample) > EXACT_MAX_PIXELS &&
            minOf(width, height) / (sample * 2) >= minShorterSide) {
            sample *= 2
        }
        return sample
    }

    private class RawRgba(val bytes: ByteArray, val width: Int, val height: Int, val rowBytes: Int)

    /**
     * The bitmap's bytes as stored: R, G, B, A per pixel (ARGB_8888's memory order), not premultiplied, in the
     * file's own colour space — copyPixelsToBuffer copies "as-is", where getPixels would convert to sRGB. The bitmap
     * is recycled: only the copy is kept.
     */
    private fun rawRgba(bitmap: Bitmap): RawRgba {
        val width = bitmap.width
        val height = bitmap.height
        if (bitmap.config == Bitmap.Config.ARGB_8888 && !bitmap.isPremultiplied) { // the case BitmapFactory gives
            val bytes = ByteArray(bitmap.rowBytes * height)
            bitmap.copyPixelsToBuffer(ByteBuffer.wrap(bytes))
            val raw = RawRgba(bytes, width, height, bitmap.rowBytes)
            bitmap.recycle()
            return raw
        }
        // Not expected with the options above (another config, or premultiplied alpha): getPixels returns
        // un-premultiplied sRGB ARGB ints, close to but not exactly the stored values.
        val pixels = IntArray(width * height)
        bitmap.getPixels(pixels, 0, width, 0, 0, width, height)
        bitmap.recycle()
        val bytes = ByteArray(4 * width * height)
        for (i in pixels.indices) {
            val p = pixels[i]
            bytes[4 * i] = (p shr 16).toByte()
            bytes[4 * i + 1] = (p shr 8).toByte()
            bytes[4 * i + 2] = p.toByte()
            bytes[4 * i + 3] = (p ushr 24).toByte()
        }
        return RawRgba(bytes, width, height, 4 * width)
    }

    private fun open(resolver: ContentResolver, uri: Uri): InputStream = try {
        resolver.openInputStream(uri) ?: throw BadImageError("cannot open $uri")
    } catch (error: FileNotFoundException) {
        throw BadImageError("cannot read it (${error.message})")
    } catch (error: SecurityException) {
        throw BadImageError("no permission to read it (${error.message})")
    } catch (error: IOException) {
        throw BadImageError("cannot read it (${error.message})")
    }

    private fun exifOrientation(input: InputStream): Int = try {
        ExifInterface(input).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
    } catch (error: IOException) {
        ExifInterface.ORIENTATION_NORMAL // no readable EXIF: keep the picture as stored
    } catch (error: RuntimeException) {
        ExifInterface.ORIENTATION_NORMAL // a malformed EXIF block: keep the picture as stored
    }
}

/** The picture as an opaque ARGB_8888 bitmap for the screen (the crop the model sees). */
fun RgbImage.toBitmap(): Bitmap {
    val pixels = IntArray(width * height) { i ->
        (0xFF shl 24) or (channel(i % width, i / width, 0) shl 16) or
            (channel(i % width, i / width, 1) shl 8) or channel(i % width, i / width, 2)
    }
    return Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888)
}

import CoreGraphics
import Foundation
import ImageIO

/// A picture the app cannot use, with the reason.
struct BadImageError: LocalizedError {
    let message: String
    init(_ message: String) { self.message = message }
    var errorDescription: String? { message }
}

/// The preprocessing contract of every bmcell artefact, written out step by step. It follows model.json's
/// "preprocessing"; the Python reference is bmcell/core/data/transforms.py::unit_transform (resize, crop, scale), fed by
/// bmcell/core/data/images.py::decode_rgb (8-bit RGB, EXIF orientation, alpha on white).
///
///   1. decode to 8-bit ...................... decode(): ImageIO (CGImageSourceCreateThumbnailAtIndex)
///   2. apply the EXIF orientation ........... decode(): kCGImageSourceCreateThumbnailWithTransform
///   3. RGB: alpha composited on white,
///      grayscale expanded to R = G = B ...... onWhite(): drawn on white in the picture's own colour space (no
///                                              colour matching, as PIL), grey levels copied to R, G and B
///   4. resize the shorter side to S, bilinear,
///      antialiased (torchvision v2.Resize) .. resizeShorterSide(): PIL's separable triangle filter
///   5. centre-crop S x S (v2.CenterCrop) .... centerCrop(): offsets rounded half-to-even, as Python's round()
///   6. x / 255 ............................... inside the Core ML model: its image input has scale 1/255
///   7. NCHW float32, R, G, B ................ inside the Core ML model: ImageType(color_layout=RGB)
///
/// Vision: the S x S picture of step 5 goes to a VNCoreMLRequest with imageCropAndScaleOption = .centerCrop, the
/// Vision option that matches steps 4-5 (scale the shorter side to the model's side, crop the middle). On an
/// already S x S picture it changes nothing. Steps 4-5 are done here rather than left to Vision because Vision's
/// own scaler is not PIL's antialiased bilinear (Apple does not document its filter), and the contract asks for
/// the latter.
///
/// Known differences from Python: (a) a picture whose shorter side is at least 2 S is reduced by ImageIO while
/// decoding (by a power of two, never below S), so a 50-megapixel photo never fills memory; step 4 then starts from
/// the reduced picture, where Python resizes from full resolution. Cell crops under 2 S (PBC: 360x363) are decoded
/// at full size. (b) Transparent pixels are composited by Core Graphics with premultiplied alpha, which can round
/// one level differently from PIL. Embedded colour profiles (Display P3 photos) are ignored, as PIL ignores them.
enum Preprocessing {

    /// RGBA bytes with alpha 255 (after step 3), rows top to bottom.
    struct RGBImage {
        let width: Int
        let height: Int
        var pixels: [UInt8]
    }

    /// The S x S picture for the model and the size of the source picture.
    struct Prepared {
        let input: CGImage
        let sourceWidth: Int
        let sourceHeight: Int
    }

    /// After downsampling, a picture larger than this is refused (only extreme aspect ratios get here).
    static let maxDecodedPixels = 16_000_000

    /// Steps 1-5 for one picture's file bytes; steps 6-7 are the Core ML model's. Throws BadImageError.
    static func prepare(_ data: Data, spec: PreprocessingSpec) throws -> Prepared {
        let (decoded, width, height) = try decode(data, minShorterSide: spec.resizeShorterSideTo)
        let rgb = try onWhite(decoded)
        let resized = resizeShorterSide(rgb, to: spec.resizeShorterSideTo, antialias: spec.antialias ?? true)
        let crop = centerCrop(resized, size: spec.centerCrop)
        return Prepared(input: try cgImage(crop), sourceWidth: width, sourceHeight: height)
    }

    // MARK: Steps 1-2: decode with the EXIF orientation applied, downsampled when huge

    static func decode(_ data: Data, minShorterSide: Int) throws -> (CGImage, Int, Int) {
        guard !data.isEmpty else { throw BadImageError("empty file (0 bytes)") }
        guard let source = CGImageSourceCreateWithData(data as CFData, [kCGImageSourceShouldCache: false] as CFDictionary),
              CGImageSourceGetCount(source) > 0,
              let properties = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any],
              let width = properties[kCGImagePropertyPixelWidth] as? Int,
              let height = properties[kCGImagePropertyPixelHeight] as? Int, width > 0, height > 0
        else {
            throw BadImageError("not an image iOS can decode (JPEG, PNG, HEIF, TIFF, BMP or GIF expected)")
        }
        guard CGImageSourceGetStatusAtIndex(source, 0) == .statusComplete else {
            throw BadImageError("cannot decode it: the file is truncated or corrupt")
        }
        let sample = sampleSize(width: width, height: height, minShorterSide: minShorterSide)
        guard (width / sample) * (height / sample) <= maxDecodedPixels else {
            throw BadImageError("\(width)x\(height) pixels is too elongated to decode safely; crop it first")
        }
        let options: [CFString: Any] = [
            kCGImageSourceCreateThumbnailFromImageAlways: true,
            kCGImageSourceCreateThumbnailWithTransform: true, // step 2: EXIF orientation, like PIL's exif_transpose
            kCGImageSourceThumbnailMaxPixelSize: max(width, height) / sample,
            kCGImageSourceShouldCacheImmediately: true,
        ]
        guard let image = CGImageSourceCreateThumbnailAtIndex(source, 0, options as CFDictionary) else {
            throw BadImageError("cannot decode it: the file may be truncated or corrupt")
        }
        return (image, width, height)
    }

    /// The largest power of two that keeps the decoded shorter side at least minShorterSide.
    static func sampleSize(width: Int, height: Int, minShorterSide: Int) -> Int {
        var sample = 1
        while min(width, height) / (sample * 2) >= minShorterSide { sample *= 2 }
        return sample
    }

    // MARK: Step 3: 8-bit RGB on white

    /// Transparency composited on white (PIL: alpha_composite(white, rgba)), stored values kept as they are: PIL
    /// applies no colour management, so neither may the app. Drawing into an sRGB context would colour-match: an
    /// untagged grey picture would pass through a gamma-2.2 grey profile (dark levels shift by up to ~20), and a
    /// Display P3 photo would be converted to sRGB. So a grey picture is drawn into a context of its own grey colour
    /// space and expanded to R = G = B, and an RGB picture into a context of its own RGB colour space (device RGB
    /// when untagged): source and destination spaces are the same, so Core Graphics copies the values. A Display P3
    /// photo's values are therefore read as Python reads them (as if they were sRGB), which is what the model was
    /// trained on. Other models (CMYK, Lab, indexed) are converted to device RGB, as PIL's convert("RGB") does.
    static func onWhite(_ image: CGImage) throws -> RGBImage {
        if image.colorSpace?.model == .monochrome {
            return try greyOnWhite(image)
        }
        let space = image.colorSpace.flatMap { $0.model == .rgb ? $0 : nil } ?? CGColorSpaceCreateDeviceRGB()
        let width = image.width, height = image.height
        var pixels = [UInt8](repeating: 255, count: width * height * 4)
        let drawn = pixels.withUnsafeMutableBytes { buffer -> Bool in
            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: width * 4, space: space,
                                          bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)
            else { return false }
            let rect = CGRect(x: 0, y: 0, width: width, height: height)
            context.setFillColor(red: 1, green: 1, blue: 1, alpha: 1) // in the context's own space: white
            context.fill(rect)
            context.interpolationQuality = .none // same size: no resampling here
            context.draw(image, in: rect)
            return true
        }
        guard drawn else { throw BadImageError("cannot convert a \(width)x\(height) picture to RGB") }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// A grey (optionally transparent) picture on white in its own grey colour space, then R = G = B = the level.
    static func greyOnWhite(_ image: CGImage) throws -> RGBImage {
        let width = image.width, height = image.height
        var grey = [UInt8](repeating: 255, count: width * height)
        let drawn = grey.withUnsafeMutableBytes { buffer -> Bool in
            guard let space = image.colorSpace,
                  let context = CGContext(data: buffer.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: width, space: space,
                                          bitmapInfo: CGImageAlphaInfo.none.rawValue)
            else { return false }
            let rect = CGRect(x: 0, y: 0, width: width, height: height)
            context.setFillColor(gray: 1, alpha: 1)
            context.fill(rect)
            context.interpolationQuality = .none
            context.draw(image, in: rect)
            return true
        }
        guard drawn else { throw BadImageError("cannot read the grey levels of a \(width)x\(height) picture") }
        var pixels = [UInt8](repeating: 255, count: width * height * 4)
        for (index, level) in grey.enumerated() {
            pixels[4 * index] = level
            pixels[4 * index + 1] = level
            pixels[4 * index + 2] = level
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    // MARK: Step 4: resize the shorter side to S, bilinear, antialiased

    /// torchvision's Resize(S) for an int S: the shorter side becomes S and the longer Int(S * long / short). The
    /// filter is PIL's bilinear: a triangle of radius 1 source pixel, widened by the shrink factor when antialias
    /// is on, applied horizontally then vertically, rounding to 8 bits in between.
    static func resizeShorterSide(_ image: RGBImage, to size: Int, antialias: Bool) -> RGBImage {
        let (width, height) = image.width <= image.height
            ? (size, size * image.height / image.width)
            : (size * image.width / image.height, size)
        var out = image
        if width != out.width { out = resample(out, toWidth: width, antialias: antialias) }
        if height != out.height { out = resample(out, toHeight: height, antialias: antialias) }
        return out
    }

    /// First source index and normalised weights of every output pixel along one axis (PIL's precompute_coeffs).
    private static func taps(inSize: Int, outSize: Int, antialias: Bool) -> [(start: Int, weights: [Double])] {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = antialias ? max(scale, 1.0) : 1.0
        let support = 1.0 * filterScale // the triangle's radius in source pixels
        return (0..<outSize).map { i in
            let center = (Double(i) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), inSize)
            var weights = (lo..<hi).map { j in max(0.0, 1.0 - abs((Double(j) - center + 0.5) / filterScale)) }
            let total = weights.reduce(0, +)
            if total > 0 { weights = weights.map { $0 / total } }
            return (lo, weights)
        }
    }

    private static func resample(_ image: RGBImage, toWidth outWidth: Int, antialias: Bool) -> RGBImage {
        let taps = taps(inSize: image.width, outSize: outWidth, antialias: antialias)
        var out = [UInt8](repeating: 255, count: outWidth * image.height * 4)
        for y in 0..<image.height {
            for x in 0..<outWidth {
                let (start, weights) = taps[x]
                blend(image.pixels, weights, into: &out, at: (y * outWidth + x) * 4) { j in (y * image.width + start + j) * 4 }
            }
        }
        return RGBImage(width: outWidth, height: image.height, pixels: out)
    }

    private static func resample(_ image: RGBImage, toHeight outHeight: Int, antialias: Bool) -> RGBImage {
        let taps = taps(inSize: image.height, outSize: outHeight, antialias: antialias)
        var out = [UInt8](repeating: 255, count: image.width * outHeight * 4)
        for y in 0..<outHeight {
            let (start, weights) = taps[y]
            for x in 0..<image.width {
                blend(image.pixels, weights, into: &out, at: (y * image.width + x) * 4) { j in ((start + j) * image.width + x) * 4 }
            }
        }
        return RGBImage(width: image.width, height: outHeight, pixels: out)
    }

    /// One output pixel: the weighted sum of R, G and B, rounded to 8 bits (alpha stays 255).
    private static func blend(_ pixels: [UInt8], _ weights: [Double], into out: inout [UInt8], at offset: Int,
                              index: (Int) -> Int) {
        var r = 0.0, g = 0.0, b = 0.0
        for (j, k) in weights.enumerated() {
            let p = index(j)
            r += k * Double(pixels[p])
            g += k * Double(pixels[p + 1])
            b += k * Double(pixels[p + 2])
        }
        out[offset] = to8Bit(r)
        out[offset + 1] = to8Bit(g)
        out[offset + 2] = to8Bit(b)
    }

    private static func to8Bit(_ value: Double) -> UInt8 { UInt8(min(255, max(0, Int(value + 0.5)))) }

    // MARK: Step 5: centre crop

    /// torchvision's center_crop: top = int(round((h - S) / 2)), left likewise, Python rounding half to even.
    static func centerCrop(_ image: RGBImage, size: Int) -> RGBImage {
        precondition(image.width >= size && image.height >= size, "crop larger than the picture")
        let top = Int((Double(image.height - size) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(image.width - size) / 2).rounded(.toNearestOrEven))
        var out = [UInt8](repeating: 255, count: size * size * 4)
        for y in 0..<size {
            let from = ((top + y) * image.width + left) * 4
            out.replaceSubrange(y * size * 4..<(y + 1) * size * 4, with: image.pixels[from..<from + size * 4])
        }
        return RGBImage(width: size, height: size, pixels: out)
    }

    // MARK: The S x S picture handed to Vision (steps 6-7 happen in the model)

    static func cgImage(_ image: RGBImage) throws -> CGImage {
        guard let space = CGColorSpace(name: CGColorSpace.sRGB),
              let provider = CGDataProvider(data: Data(image.pixels) as CFData),
              let picture = CGImage(width: image.width, height: image.height, bitsPerComponent: 8, bitsPerPixel: 32,
                                    bytesPerRow: image.width * 4, space: space,
                                    bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                                    provider: provider, decode: nil, shouldInterpolate: false,
                                    intent: .defaultIntent)
        else { throw BadImageError("cannot build the \(image.width)x\(image.height) model input") }
        return picture
    }

    /// A uniform grey S x S picture (the benchmark's input: latency does not depend on pixel values).
    static func grey(size: Int) throws -> CGImage {
        try cgImage(RGBImage(width: size, height: size,
                             pixels: (0..<size * size).flatMap { _ in [UInt8(128), 128, 128, 255] }))
    }
}

package org.bmcell.demo

import android.content.Context
import java.io.Closeable
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The bundled ExecuTorch program: a 1x3xSxS float32 tensor in, 1xC logits out (classes in model.json's order), or
 * 1x(C + 1) when model.json has a novelty block: the logits, then the picture's novelty score (Novelty.kt).
 *
 * Loading a Module resizes ExecuTorch's process-wide threadpool, and XNNPACK methods loaded earlier keep a
 * pointer to the old pool: keep one Classifier per process and close it before opening another.
 */
class Classifier private constructor(val info: ModelInfo, private val module: Module) : Closeable {

    companion object {
        /** model.json read and checked, model.pte copied out of the APK and its sha256 verified, then loaded. */
        fun load(context: Context, threads: Int = 0): Classifier {
            val info = ModelBundle.readInfo(context.assets)
            return open(info, ModelBundle.install(context, info), threads)
        }

        /** Load an already verified program. threads = 0 lets ExecuTorch choose (half the cores). */
        fun open(info: ModelInfo, file: File, threads: Int): Classifier {
            val module = try {
                Module.load(file.absolutePath, Module.LOAD_MODE_FILE, threads)
            } catch (error: RuntimeException) {
                throw BundleError("ExecuTorch cannot load ${info.file} (${error.message}). If it was exported by a " +
                    "newer executorch than this app's org.pytorch:executorch-android, align the two versions.")
            }
            val failure = try {
                // An Int error code in the Java API (0 = Ok); the Kotlin API returns Unit and throws instead.
                val code: Any = module.loadMethod("forward")
                if (code is Int && code != 0) "error 0x${Integer.toHexString(code)}" else null
            } catch (error: RuntimeException) {
                error.message ?: error.toString()
            }
            if (failure != null) {
                module.destroy()
                throw BundleError("ExecuTorch cannot load the forward method of ${info.file}: $failure")
            }
            return Classifier(info, module)
        }
    }

    /**
     * The raw output for one preprocessed image (PreprocessCore.toTensor's output): the logits, then the novelty score
     * when model.json has a novelty block. A program whose output length model.json does not declare is refused.
     */
    fun output(input: FloatArray): FloatArray {
        val size = info.imageSize.toLong()
        require(input.size.toLong() == 3 * size * size) { "input has ${input.size} values, expected 3x${size}x$size" }
        val outputs = module.forward(EValue.from(Tensor.fromBlob(input, longArrayOf(1, 3, size, size))))
        val output = outputs[0].toTensor().dataAsFloatArray
        outputProblem(output.size, info.classes.size, info.novelty)?.let {
            throw BundleError("Refusing the model: $it; $INSTALL_HINT.")
        }
        return output
    }

    /**
     * The k most probable classes (all of them by default), most probable first, with model.json's calibrated
     * probabilities (softmax(logits / temperature)), how sure the top one is, and the novelty score: an answer of
     * UNKNOWN level when it reaches model.json's novelty threshold (Confidence.kt, Novelty.kt).
     */
    fun classify(input: FloatArray, k: Int = info.classes.size): Answer =
        answer(output(input), info.classes, info.confidence, k, info.novelty)

    override fun close() = module.destroy()
}

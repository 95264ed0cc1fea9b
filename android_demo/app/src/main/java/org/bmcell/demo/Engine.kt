package org.bmcell.demo

import android.content.Context
import android.os.Build
import android.util.Log
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The app's one Classifier and the one thread that uses it. It lives as long as the process, so a screen
 * rotation does not load a second Module (which would rebuild ExecuTorch's shared threadpool under the first).
 *
 * Nothing thrown on that thread escapes it (an uncaught throwable there would kill the app): a failed load becomes
 * the reason passed to every later job, and a job that throws has its failure handed to `failed` as a message.
 */
object Engine {
    private const val TAG = "bmcell"
    private val thread: ExecutorService = Executors.newSingleThreadExecutor { job -> Thread(job, "bmcell-inference") }
    private var classifier: Classifier? = null // touched on `thread` only
    private var loadError: String? = null

    /** The device's ABIs, for the message when ExecuTorch's native library does not load. */
    val abis: List<String> get() = Build.SUPPORTED_ABIS.toList()

    /**
     * Run work on the inference thread with the loaded classifier, or with the reason there is none. Whatever work
     * throws (an Error included) reaches `failed` as the sentence to show; `failed` runs on the inference thread.
     */
    fun submit(context: Context, failed: (String) -> Unit, work: (Classifier?, String?) -> Unit) {
        val app = context.applicationContext
        thread.execute {
            if (classifier == null && loadError == null) {
                try {
                    classifier = Classifier.load(app)
                } catch (error: Throwable) { // BundleError, IOException, UnsatisfiedLinkError, OutOfMemoryError…
                    Log.e(TAG, "cannot load the model", error)
                    loadError = failureMessage("Cannot load the model", error, abis)
                }
            }
            try {
                work(classifier, loadError)
            } catch (error: Throwable) {
                Log.e(TAG, "job failed", error)
                try {
                    failed(failureMessage("Something went wrong", error, abis))
                } catch (again: Throwable) { // never let the inference thread die: later jobs would never run
                    Log.e(TAG, "cannot report a failure", again)
                }
            }
        }
    }
}

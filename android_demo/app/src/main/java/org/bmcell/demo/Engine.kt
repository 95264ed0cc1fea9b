package org.bmcell.demo

import android.content.Context
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The app's one Classifier and the one thread that uses it. It lives as long as the process, so a screen
 * rotation does not load a second Module (which would rebuild ExecuTorch's shared threadpool under the first).
 */
object Engine {
    private val thread: ExecutorService = Executors.newSingleThreadExecutor()
    private var classifier: Classifier? = null // touched on `thread` only
    private var loadError: String? = null

    /** Run work on the inference thread with the loaded classifier, or with the reason there is none. */
    fun submit(context: Context, work: (Classifier?, String?) -> Unit) {
        val app = context.applicationContext
        thread.execute {
            if (classifier == null && loadError == null) {
                try {
                    classifier = Classifier.load(app)
                } catch (error: BundleError) {
                    loadError = error.message
                } catch (error: RuntimeException) {
                    loadError = "Cannot load the model: ${error.message}"
                }
            }
            work(classifier, loadError)
        }
    }
}

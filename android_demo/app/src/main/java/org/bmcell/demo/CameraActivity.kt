package org.bmcell.demo

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.os.Bundle
import android.util.Log
import android.widget.Button
import android.widget.Toast
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.io.File

/**
 * CameraX preview and one capture, saved as a JPEG (with its EXIF orientation) in the cache folder. The path goes
 * back to MainActivity, which classifies it like any picked photo. Every failure (permission denied, no camera,
 * camera in use, a capture that cannot be written) finishes this screen with EXTRA_ERROR, which MainActivity shows.
 */
class CameraActivity : ComponentActivity() {

    companion object {
        const val EXTRA_PATH = "org.bmcell.demo.PATH"
        const val EXTRA_ERROR = "org.bmcell.demo.ERROR"
    }

    private var imageCapture: ImageCapture? = null

    private val requestPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else fail(getString(R.string.camera_denied))
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_camera)
        findViewById<Button>(R.id.capture).setOnClickListener { capture() }
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestPermission.launch(Manifest.permission.CAMERA)
        }
    }

    private fun startCamera() {
        try {
            val future = ProcessCameraProvider.getInstance(this)
            future.addListener({
                try {
                    val provider = future.get()
                    val preview = Preview.Builder().build()
                    preview.setSurfaceProvider(findViewById<PreviewView>(R.id.preview).surfaceProvider)
                    val capture = ImageCapture.Builder().setCaptureMode(ImageCapture.CAPTURE_MODE_MINIMIZE_LATENCY).build()
                    provider.unbindAll()
                    provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, capture)
                    imageCapture = capture
                } catch (error: Throwable) { // no back camera, camera in use, provider failure, native library…
                    fail(failureMessage("Cannot start the camera", error))
                }
            }, ContextCompat.getMainExecutor(this))
        } catch (error: Throwable) {
            fail(failureMessage("Cannot start the camera", error))
        }
    }

    private fun capture() {
        val capture = imageCapture
        if (capture == null) { // tapped before the camera has started
            Toast.makeText(this, R.string.camera_not_ready, Toast.LENGTH_SHORT).show()
            return
        }
        val file = File(cacheDir, "camera.jpg")
        try {
            val options = ImageCapture.OutputFileOptions.Builder(file).build()
            capture.takePicture(options, ContextCompat.getMainExecutor(this), object : ImageCapture.OnImageSavedCallback {
                override fun onImageSaved(output: ImageCapture.OutputFileResults) {
                    // A path, not a file:// Uri: Android refuses file:// Uris in intents (FileUriExposedException).
                    setResult(RESULT_OK, Intent().putExtra(EXTRA_PATH, file.absolutePath))
                    finish()
                }

                override fun onError(exception: ImageCaptureException) { // includes a full disk (file not written)
                    fail(failureMessage("The capture failed", exception))
                }
            })
        } catch (error: Throwable) {
            fail(failureMessage("The capture failed", error))
        }
    }

    private fun fail(message: String) {
        Log.e("bmcell", message)
        if (isFinishing) return
        setResult(RESULT_CANCELED, Intent().putExtra(EXTRA_ERROR, message))
        finish()
    }
}

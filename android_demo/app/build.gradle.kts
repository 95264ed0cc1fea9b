// The bmcell demo app: classify a photo with the ExecuTorch (XNNPACK) program exported by
// `bmcell export RUN --target android --app android_demo`, and a benchmark mode (see README.md).
plugins {
    id("com.android.application")
}

android {
    namespace = "org.bmcell.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "org.bmcell.demo"
        minSdk = 23 // what org.pytorch:executorch-android declares; CameraX and AndroidX need no more
        targetSdk = 36
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false // ExecuTorch's JNI classes must keep their names
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // The .pte is copied out of the APK once per launch; stored uncompressed it is a plain copy.
    androidResources {
        noCompress += "pte"
    }
}

dependencies {
    // ExecuTorch runtime with the XNNPACK backend (arm64-v8a and x86_64). Keep it at the version of the
    // `executorch` Python package that exported the .pte (manifest.json: tool_versions.executorch).
    implementation("org.pytorch:executorch-android:1.5.1")

    implementation("androidx.activity:activity-ktx:1.13.0") // photo picker and activity results
    implementation("androidx.core:core-ktx:1.17.0")
    implementation("androidx.exifinterface:exifinterface:1.4.2")

    val cameraxVersion = "1.6.1"
    implementation("androidx.camera:camera-core:$cameraxVersion")
    implementation("androidx.camera:camera-camera2:$cameraxVersion")
    implementation("androidx.camera:camera-lifecycle:$cameraxVersion")
    implementation("androidx.camera:camera-view:$cameraxVersion")
}

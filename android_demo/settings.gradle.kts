// bmcell Android demo: one app module. Plugins come from Google's Maven (AGP, AndroidX, CameraX) and Maven Central
// (ExecuTorch, fbjni, SoLoader).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "bmcell-android-demo"
include(":app")

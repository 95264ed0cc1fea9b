import SwiftUI

@main
struct BmcellDemoApp: App {
    var body: some Scene {
        WindowGroup {
            if Benchmark.requested {
                BenchmarkView()
            } else {
                ContentView()
            }
        }
    }
}

/// Shown when the app is launched with `-benchmark YES` (Benchmark.swift).
struct BenchmarkView: View {
    @State private var message = "Benchmarking…"

    var body: some View {
        Text(message)
            .padding()
            .textSelection(.enabled)
            .task {
                UIApplication.shared.isIdleTimerDisabled = true
                message = await Benchmark.run()
                print(message) // visible with `xcrun simctl launch --console` or `devicectl ... --console`
                UIApplication.shared.isIdleTimerDisabled = false
            }
    }
}

// Runs an ExecuTorch program's forward method on raw float32 images, image by image, for `bmcell parity --arch
// arm64`: built for aarch64 against the executorch wheel's own runtime libraries (the XNNPACK backend and the
// optimized kernels the Python bindings link), and run under qemu-aarch64.
//
// usage: executorch_runner PROGRAM.pte IMAGES.f32 COUNT OUTPUT.f32 THREADS
//   IMAGES.f32: COUNT images of the program's input shape (1x3xHxW), float32, C order.
//   OUTPUT.f32: COUNT rows of the program's first output, float32.
// Exit status 0 and one line "outputs COUNT x WIDTH" on success; 1 and one line on stderr naming the failure.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr_maker.h>
#include <executorch/runtime/platform/platform.h>

namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  void _unsafe_reset_threadpool(unsigned int count);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::extension::Module;
using executorch::runtime::Error;

// The runtime's log lines without their timestamps, errors only: a timestamp's digits would change the instruction
// count from run to run, and the info lines are noise here.
static void errors_only(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
                        const char* message, size_t length) {
  if (level == kError || level == kFatal)
    std::fprintf(stderr, "%s:%zu %.*s\n", filename, line, static_cast<int>(length), message);
}

static int fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

int main(int argc, char** argv) {
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(errors_only, __FILE__));
  if (argc != 6) return fail("usage: executorch_runner PROGRAM.pte IMAGES.f32 COUNT OUTPUT.f32 THREADS");
  const std::string program = argv[1], images_path = argv[2], output_path = argv[3 + 1];
  const long count = std::atol(argv[3]);
  const unsigned threads = static_cast<unsigned>(std::atoi(argv[5]));
  executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);

  Module module(program, Module::LoadMode::File);
  if (module.load_method("forward") != Error::Ok) return fail("cannot load the forward method of " + program);
  auto meta = module.method_meta("forward");
  if (!meta.ok()) return fail("no method metadata in " + program);
  auto input_meta = meta->input_tensor_meta(0);
  if (!input_meta.ok()) return fail("no input tensor in " + program);
  std::vector<executorch::aten::SizesType> sizes(input_meta->sizes().begin(), input_meta->sizes().end());
  size_t per_image = 1;
  for (auto size : sizes) per_image *= static_cast<size_t>(size);

  std::ifstream input(images_path, std::ios::binary);
  std::vector<float> images(per_image * static_cast<size_t>(count));
  if (!input.read(reinterpret_cast<char*>(images.data()), images.size() * sizeof(float)))
    return fail("cannot read " + std::to_string(count) + " images of " + std::to_string(per_image) +
                " floats from " + images_path);

  std::vector<float> outputs;
  size_t width = 0;
  for (long i = 0; i < count; ++i) {
    auto tensor = executorch::extension::from_blob(images.data() + per_image * i, sizes);
    auto result = module.forward(tensor);
    if (!result.ok()) return fail("forward failed on image " + std::to_string(i) + " (error " +
                                  std::to_string(static_cast<int>(result.error())) + ")");
    const auto& out = result->at(0).toTensor();
    width = static_cast<size_t>(out.numel());
    outputs.insert(outputs.end(), out.const_data_ptr<float>(), out.const_data_ptr<float>() + width);
  }
  std::ofstream output(output_path, std::ios::binary);
  if (!output.write(reinterpret_cast<const char*>(outputs.data()), outputs.size() * sizeof(float)))
    return fail("cannot write " + output_path);
  std::printf("outputs %ld x %zu\n", count, width);
  return 0;
}

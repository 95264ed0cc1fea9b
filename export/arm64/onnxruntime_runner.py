"""Runs an ONNX or ORT model on raw float32 images, image by image, under the aarch64 Python that `bmcell
setup-arm64` unpacks (numpy and onnxruntime only: nothing of bmcell is importable there). Session options are the
ones export.formats.onnx gives on x86-64, so the architecture is the only difference.

usage: python onnxruntime_runner.py MODEL IMAGES.f32 COUNT OUTPUT.f32 THREADS INPUT_NAME OUTPUT_NAME
Prints "outputs COUNT x WIDTH"; exits 1 with one line on stderr on failure."""

import sys

import numpy as np
import onnxruntime as ort


def main(model: str, images_path: str, count: str, output_path: str, threads: str, input_name: str,
         output_name: str) -> None:
    """Load the model, run every image, write the outputs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    shape = [int(size) for size in session.get_inputs()[0].shape]
    images = np.fromfile(images_path, dtype=np.float32).reshape([int(count)] + shape[1:])
    outputs = np.concatenate([session.run([output_name], {input_name: images[i:i + 1]})[0]
                              for i in range(len(images))])
    outputs.astype(np.float32).tofile(output_path)
    print(f"outputs {outputs.shape[0]} x {outputs.shape[1]}")


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except Exception as error:  # the caller reads one line
        print(f"{type(error).__name__}: {error}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)

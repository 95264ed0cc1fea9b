"""Golden vectors of the preprocessing contract: reference images and the exact tensor facts Python produces.

`python -m tests.contract.preprocessing` rewrites preprocessing.json (and the three generated images) from
bmcell.core.data.images.load_rgb + bmcell.core.data.transforms.unit_transform, and, when models/ holds the released model, the
top-1 class that model gives each PBC reference image. tests/test_released_model.py checks the Python path against
it and the web test checks the browser against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
GOLDEN = HERE / "preprocessing.json"
SIZES = (64, 128, 256)
PBC_IMAGES = ("basophil/BA_100102.jpg", "lymphocyte/LY_100275.jpg", "neutrophil/BNE_100878.jpg")
PIXELS = ((0, 0), (7, 3), (31, 40))  # (y, x) fractions of 64 scaled to the size: same spots at every size


def write_generated_images() -> None:
    """A grayscale PNG, a semi-transparent RGBA PNG and a non-square JPEG that EXIF says to rotate 90 degrees."""
    y, x = np.mgrid[0:50, 0:30]
    Image.fromarray(((x * 7 + y * 3) % 256).astype(np.uint8), "L").save(HERE / "images" / "gray.png")
    y, x = np.mgrid[0:36, 0:48]
    rgba = np.stack([x * 5, y * 7, (x * y) % 256, (x * 11 + y * 3) % 256], -1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(HERE / "images" / "rgba.png")
    y, x = np.mgrid[0:24, 0:40]
    rgb = np.stack([x * 6, y * 10, 255 - x * 6], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(HERE / "images" / "exif_rotated.jpg", quality=95, exif=exif)


def tensor_facts(unit_bytes: np.ndarray) -> dict:
    """What the golden file records of one 3xSxS uint8 crop (the tensor is these bytes x float32(1/255))."""
    size = unit_bytes.shape[-1]
    tensor = unit_bytes.astype(np.float32) * np.float32(1 / 255)
    return {"sha256_uint8_chw": hashlib.sha256(np.ascontiguousarray(unit_bytes, np.uint8).tobytes()).hexdigest(),
            "mean": [round(float(c.mean()), 6) for c in tensor], "std": [round(float(c.std()), 6) for c in tensor],
            "min": round(float(tensor.min()), 6), "max": round(float(tensor.max()), 6),
            "pixels": {f"{y * size // 64},{x * size // 64}": unit_bytes[:, y * size // 64, x * size // 64].tolist()
                       for y, x in PIXELS}}


def python_unit_bytes(path: Path, size: int) -> np.ndarray:
    """load_rgb + unit_transform, as the uint8 values the float tensor holds (3xSxS)."""
    from bmcell.core.data.images import load_rgb
    from bmcell.core.data.transforms import unit_transform

    tensor = unit_transform(size)(load_rgb(path))
    return (tensor * 255).round().numpy().astype(np.uint8)


def reference_images(pbc: Path | None) -> dict[str, Path]:
    """Golden image name -> path: the generated images, and the PBC ones when pbc is given."""
    images = {f"generated/{p.name}": p for p in sorted((HERE / "images").iterdir())}
    if pbc is not None:
        images |= {f"pbc/{name}": pbc / name for name in PBC_IMAGES}
    return images


def released_top1(images: dict[str, Path]) -> dict:
    """The released model's weights sha256 and its top-1 class for each image through the input contract."""
    import torch

    from bmcell.core.checkpoint import load_checkpoint
    from bmcell.core.device import select_device
    from bmcell.jobs.release import DEFAULT_MODEL
    from export.golden import reference_logits

    checkpoint = load_checkpoint(DEFAULT_MODEL)
    size = checkpoint.image_size
    inputs = torch.from_numpy(np.stack([python_unit_bytes(path, size) for path in images.values()]))
    logits = reference_logits(checkpoint, inputs.float() * (1 / 255), select_device("auto"))
    return {"model": DEFAULT_MODEL.name, "weights_sha256": checkpoint.weights_sha256,
            "top1": {name: checkpoint.classes[int(row.argmax())] for name, row in zip(images, logits)}}


def main() -> None:
    """Rewrite the generated images and preprocessing.json (with the released model's top-1 when there is one)."""
    from bmcell.jobs.release import DEFAULT_MODEL
    from tests.conftest import PBC

    write_generated_images()
    images = reference_images(PBC)
    golden = {"contract": "bmcell.core.data.images.load_rgb + bmcell.core.data.transforms.unit_transform",
              "images": {name: {"sizes": {str(s): tensor_facts(python_unit_bytes(path, s)) for s in SIZES}}
                         for name, path in images.items()}}
    if (DEFAULT_MODEL / "best.json").is_file():
        golden["released_model"] = released_top1({n: p for n, p in images.items() if n.startswith("pbc/")})
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

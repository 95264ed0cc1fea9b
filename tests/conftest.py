"""Shared fixtures: tiny synthetic datasets, image writers and the real-data location."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bmcell.core.checkpoint import metadata_digest
from bmcell.core.data.synthetic import write_synthetic_dataset

PBC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbc"
TINY = {"arch": "mobilevit_xxs", "image_size": 64, "batch_size": 16, "workers": 0}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small, read-only-by-convention synthetic dataset shared by the whole session."""
    root = tmp_path_factory.mktemp("synthetic") / "cells"
    write_synthetic_dataset(root, per_class=12, size=64, seed=1)
    return root


@pytest.fixture
def synthetic_copy(synthetic_data, tmp_path) -> Path:
    """A private copy of the synthetic dataset a test may modify."""
    return Path(shutil.copytree(synthetic_data, tmp_path / "cells"))


def jpeg_bytes(seed: int = 0, size: int = 48, mode: str = "RGB") -> bytes:
    """A small random JPEG."""
    array = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def pbc_root() -> Path:
    """The shared PBC dataset, or a skip that says why."""
    if not PBC.is_dir():
        pytest.skip(f"real-data test skipped: {PBC} is absent (it stands for a user's own dataset)")
    return PBC


def lazy_exporter(folder: Path, inputs):
    """A function name → artefact path that exports each format on first use only (exports are slow)."""
    import torch

    from export.formats import FORMATS

    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            fmt = FORMATS[name]
            with torch.no_grad():
                fmt.export(inputs, folder / fmt.filename())
            paths[name] = folder / fmt.filename()
        return paths[name]

    return get


@pytest.fixture(scope="session")
def tiny_run(synthetic_data, tmp_path_factory) -> Path:
    """One tiny trained run (2 epochs of mobilevit_xxs at 64 px on the synthetic cells) shared by the session."""
    from bmcell.core.config import TrainConfig
    from bmcell.core.engine import fit

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    fit(TrainConfig(out=str(out), data=str(synthetic_data), epochs=2, data_path="loader", **TINY))
    return out


def released_data_folder(tmp_root: Path) -> Path | None:
    """The data the released model was trained on: PBC itself, or — for a release made from a `bmcell combine`
    folder — that folder rebuilt here from its sources.json recipe (each source's root taken from ../shared/data);
    None when that data is absent."""
    import json

    from bmcell.core.data.sources import combine_sources, sources_from_recipe
    from bmcell.jobs.release import DEFAULT_MODEL

    recipe_file = DEFAULT_MODEL / "sources.json"
    if not recipe_file.is_file():
        return PBC if PBC.is_dir() else None
    summary = json.loads(recipe_file.read_text(encoding="utf-8"))
    recipe, repo = summary["recipe"], Path(__file__).resolve().parents[1]
    roots = {name: PBC.parent / Path(root).name for name, root in recipe["source"].items()}
    if not all(root.is_dir() for root in roots.values()):
        return None
    local = {"source": {name: str(root) for name, root in roots.items()},  # this machine's paths, same options
             "groups": {name: str(roots[name] / Path(spec).name) for name, spec in recipe["groups"].items()},
             "split": {name: str(repo / spec) for name, spec in recipe["split"].items()}, "cap": recipe["cap"]}
    out = tmp_root / "released-data"
    combine_sources(sources_from_recipe(local), out, summary["val_share"], summary["seed"], local)
    return out / "data"


@pytest.fixture(scope="session")
def released_data(tmp_path_factory) -> Path:
    """released_data_folder, or a skip that says why."""
    folder = released_data_folder(tmp_path_factory.mktemp("released"))
    if folder is None:
        pytest.skip("real-data test skipped: the released model's training data is absent under ../shared/data")
    return folder


@pytest.fixture(scope="session")
def released_export(tmp_path_factory):
    """`bmcell export --target android --target web --calib 32` of the released model as on a fresh clone: no
    checkpoint and no data folder given (its own sample set), parity on; (export folder, CLI result). Shared by the
    released-model and web-app tests. 32 of the sample set's 128 calibration images: an eight-view model runs every
    image 8 times, and the int8 artefacts' agreement with the float model is the same within noise on 16, 32 and 128
    (times and figures: docs/development.md)."""
    from typer.testing import CliRunner

    from bmcell.cli.main import app
    from bmcell.jobs.release import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "best.json").is_file():
        pytest.skip(f"no released model in {DEFAULT_MODEL}")
    out = tmp_path_factory.mktemp("released-export") / "export"
    return out, CliRunner().invoke(app, ["export", "--target", "android", "--target", "web", "--calib", "32",
                                          "--out", str(out)])


def rewritten_checkpoint(run: Path, folder: Path, drop: str, meta_edit=None) -> Path:
    """A copy of a run's best checkpoint (and split) in folder, without its stored tensor `drop`, its metadata edited
    by meta_edit and re-signed."""
    from safetensors.torch import load_file, save_file

    for name in ("best.json", "best.safetensors", "split.json"):
        (folder / name).write_bytes((run / name).read_bytes())
    weights = load_file(str(folder / "best.safetensors"))
    del weights[drop]
    save_file(weights, str(folder / "best.safetensors"))
    meta = json.loads((folder / "best.json").read_text())
    if meta_edit:
        meta_edit(meta)
    meta["weights"]["sha256"] = hashlib.sha256((folder / "best.safetensors").read_bytes()).hexdigest()
    meta["metadata_sha256"] = metadata_digest(meta)
    (folder / "best.json").write_text(json.dumps(meta))
    return folder / "best.json"


def built_arm64_environment():
    """The built aarch64 environment (`bmcell setup-arm64`), or a skip; a failure with BMCELL_REQUIRE_ARM64 set, as
    in CI, which builds it."""
    from export.arm64.environment import Arm64Environment, default_root, environment_status

    env = Arm64Environment(default_root())
    if not all(environment_status(env).values()):
        reason = f"aarch64 environment not built in {env.root} (`bmcell setup-arm64`)"
        if os.environ.get("BMCELL_REQUIRE_ARM64"):
            pytest.fail(f"BMCELL_REQUIRE_ARM64 is set but the {reason}")
        pytest.skip(reason)
    return env

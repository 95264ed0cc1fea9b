"""`bmcell combine`: several sources in one training folder, split by group, with each source's held-out images."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict

import pytest
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core.data.sampling import EpochSampler, source_balanced_weights
from bmcell.core.data.sources import held_out_groups

runner = CliRunner()


def test_held_out_groups_take_whole_small_groups_up_to_the_share():
    files = {f"n/{i}.jpg": "n" for i in range(10)} | {f"l/{i}.jpg": "l" for i in range(4)}
    groups = {f"n/{i}.jpg": ("g1" if i < 2 else "g2" if i < 4 else "big") for i in range(10)}
    groups |= {f"l/{i}.jpg": f"s{i}" for i in range(4)}
    held = held_out_groups(files, groups, 0.25)
    assert "big" not in held and "g1" in held and "g2" in held  # 4 of 10; the big group would take over half
    assert len(held & {"s0", "s1", "s2", "s3"}) == 1


def test_combine_two_labs_and_train_on_them(synthetic_data, tmp_path):
    lab = tmp_path / "lab"
    labels = [("file", "series")]
    for cls in ("neutrophil", "lymphocyte"):
        for i, path in enumerate(sorted((synthetic_data / cls).glob("*.jpg"))):
            (lab / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, lab / cls / path.name)
            labels.append((f"{cls}/{path.name}", f"{cls}-{i // 2}"))  # two images per series
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(labels)
    out = tmp_path / "combined"
    result = runner.invoke(app, ["combine", str(out), "--source", f"synth={synthetic_data}", "--source", f"lab={lab}",
                                 "--groups", f"lab={tmp_path / 'labels.csv'}:series", "--cap", "synth=6,3"])
    assert result.exit_code == 0, result.output
    with open(out / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    sides = defaultdict(set)
    series = dict(labels[1:])
    for row in rows:
        cls, source, name = row["path"].split("/")
        assert (out / "data" / row["path"]).is_file()
        if source == "lab":
            sides[series[f"{cls}/{name}"]].add(row["subset"])
    assert all(len(s) == 1 for s in sides.values()) and {"train", "val"} <= set().union(*sides.values())
    synth = [r for r in rows if r["path"].split("/")[1] == "synth"]
    per_class = defaultdict(int)
    for r in synth:
        per_class[r["path"].split("/")[0], r["subset"]] += 1
    assert max(n for (c, s), n in per_class.items() if s == "train") <= 6
    assert max(n for (c, s), n in per_class.items() if s == "val") <= 3
    held = sorted(p.relative_to(out / "heldout" / "lab").as_posix() for p in (out / "heldout" / "lab").rglob("*.jpg"))
    assert held == sorted(f"{r['path'].split('/')[0]}/{r['path'].split('/')[2]}" for r in rows
                          if r["path"].split("/")[1] == "lab" and r["subset"] == "val")
    assert json.loads((out / "sources.json").read_text())["sources"]["lab"]["grouped"] is True

    trained = runner.invoke(app, ["train", "--data", str(out / "data"), "--split", str(out / "split.csv"), "--out",
                                  str(tmp_path / "run"), "--arch", "mobilevit_xxs", "--image-size", "64", "--epochs",
                                  "1", "--batch-size", "8", "--workers", "0", "--input-norm", "per-image",
                                  "--balance-sources"])
    assert trained.exit_code == 0, trained.output
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["input_norm"] == "per-image" and meta["split"]["train"] + meta["split"]["val"] == len(rows)
    assert meta["config"]["balance_sources"] is True
    refused = runner.invoke(app, ["train", "--data", str(synthetic_data), "--out", str(tmp_path / "run2"), "--arch",
                                  "mobilevit_xxs", "--image-size", "64", "--epochs", "1", "--balance-sources"])
    assert refused.exit_code == 2 and "bmcell combine" in refused.output


def test_source_balanced_weights_share_each_class_equally_among_its_sources():
    labels = [0] * 9 + [0] + [1] * 4
    sources = ["big"] * 9 + ["small"] + ["big"] * 4
    weights = source_balanced_weights(labels, sources)
    assert weights[:10].sum() == pytest.approx(1.0) and weights[10:].sum() == pytest.approx(1.0)  # class-balanced
    assert weights[:9].sum() == pytest.approx(weights[9])  # the one 'small' image draws as often as the 9 'big' ones
    sampler = EpochSampler(labels, True, seed=0, sources=sources)
    sampler.num_samples = 20_000
    drawn = Counter(sources[i] for i in sampler.indices().tolist() if labels[i] == 0)
    assert drawn["small"] / (drawn["small"] + drawn["big"]) == pytest.approx(0.5, abs=0.03)


def test_epoch_images_sets_the_epoch_length_and_redraws_each_epoch():
    labels = [0] * 30 + [1] * 10
    for balanced in (True, False):
        sampler = EpochSampler(labels, balanced, seed=0, epoch_images=12)
        first = sampler.indices().tolist()
        sampler.set_epoch(1)
        assert len(first) == len(sampler) == 12 and sampler.indices().tolist() != first
    longer = EpochSampler(labels, False, seed=0, epoch_images=100)  # longer than the folder: every image twice+
    drawn = Counter(longer.indices().tolist())
    assert len(longer.indices()) == 100 and set(drawn) == set(range(40)) and min(drawn.values()) >= 2


def test_combine_errors_before_writing(synthetic_data, tmp_path):
    out = tmp_path / "c"
    bad = runner.invoke(app, ["combine", str(out), "--source", f"a={synthetic_data}", "--groups", "b=x.csv:s"])
    assert bad.exit_code == 2 and "no --source gives" in bad.output and not out.exists()
    bad = runner.invoke(app, ["combine", str(out), "--source", "a"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output
    (tmp_path / "g.csv").write_text("file,series\nneutrophil/x.jpg,1\n")
    bad = runner.invoke(app, ["combine", str(out), "--source", f"a={synthetic_data}", "--groups",
                              f"a={tmp_path / 'g.csv'}:series"])
    assert bad.exit_code == 2 and "no group id" in bad.output and not out.exists()

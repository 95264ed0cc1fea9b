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


def _combine(out, *options):
    """`bmcell combine OUT OPTIONS...` through the CLI."""
    return runner.invoke(app, ["combine", str(out), *options])


@pytest.mark.parametrize("name", ["../../../ESCAPED", "lab/one", "a\\b", "..", ".hidden", "-x", "x" * 65, "a b"])
def test_combine_refuses_a_source_name_that_is_not_a_plain_name(synthetic_data, tmp_path, name):
    result = _combine(tmp_path / "nest" / "deep" / "cmb", "--source", f"{name}={synthetic_data}", "--source",
                      f"B={synthetic_data}")
    assert result.exit_code == 2 and "not a plain folder name" in result.output, result.output
    assert list(tmp_path.iterdir()) == []  # nothing written, inside OUT or out of it


@pytest.mark.parametrize("options", [
    ["--source", "A={src}", "--source", "A={src}"],
    ["--source", "A={src}", "--cap", "A=6", "--cap", "A=3"],
    ["--source", "A={src}", "--split", "A=x.csv", "--split", "A=y.csv"],
    ["--source", "A={src}", "--groups", "A=x.csv:s", "--groups", "A=y.csv:s"],
])
def test_combine_refuses_a_name_given_twice(synthetic_data, tmp_path, options):
    result = _combine(tmp_path / "c", *(option.format(src=synthetic_data) for option in options))
    assert result.exit_code == 2 and "given twice" in result.output and not (tmp_path / "c").exists()


def test_combine_refuses_names_that_differ_only_in_case_or_name_no_source(synthetic_data, tmp_path):
    result = _combine(tmp_path / "c", "--source", f"lab={synthetic_data}", "--source", f"Lab={synthetic_data}")
    assert result.exit_code == 2 and "differ only in case" in result.output and not (tmp_path / "c").exists()
    result = _combine(tmp_path / "c", "--source", f"lab={synthetic_data}", "--cap", "lab2=5")
    assert result.exit_code == 2 and "no --source gives: ['lab2']" in result.output


def test_combine_refuses_one_folder_under_two_names(synthetic_data, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(synthetic_data, target_is_directory=True)
    for second in (synthetic_data, alias):  # as written, and through a link
        result = _combine(tmp_path / "c", "--source", f"one={synthetic_data}", "--source", f"two={second}")
        assert result.exit_code == 2 and "one and two name the same folder" in result.output, result.output
        assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("cap", ["abc", "1e3", "-1,-1", "0,0", "0", "5,0", "5,3,2", "5,", "1.5"])
def test_combine_refuses_a_cap_that_is_not_one_or_two_whole_numbers_of_at_least_1(synthetic_data, tmp_path, cap):
    result = _combine(tmp_path / "c", "--source", f"A={synthetic_data}", "--cap", f"A={cap}")
    assert result.exit_code == 2 and "--cap A=" in result.output and "whole numbers" in result.output, result.output
    assert not (tmp_path / "c").exists()


def test_combine_split_takes_the_csv_form_train_takes_and_refuses_bad_files(synthetic_data, tmp_path):
    files = [p.relative_to(synthetic_data).as_posix() for p in sorted(synthetic_data.rglob("*.jpg"))]
    sides = {path: "val" if i % 4 == 0 else "train" for i, path in enumerate(files)}
    with open(tmp_path / "s.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "subset"), *sides.items()])
    result = _combine(tmp_path / "c", "--source", f"A={synthetic_data}", "--split", f"A={tmp_path / 's.csv'}")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "c" / "split.csv", newline="") as handle:
        combined = {row["path"]: row["subset"] for row in csv.DictReader(handle)}
    assert combined == {f"{p.split('/')[0]}/A/{p.split('/', 1)[1]}": side for p, side in sides.items()}
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "train-only.csv").write_text("path,subset\n" + "".join(f"{p},train\n" for p in files))
    for name, message in [("bin.csv", "not a CSV file of UTF-8 text"), ("bad.json", "not a bmcell split.json"),
                          ("train-only.csv", "would have no val image")]:
        result = _combine(tmp_path / "d", "--source", f"A={synthetic_data}", "--split", f"A={tmp_path / name}")
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "d").exists()


def test_combine_reads_a_groups_csv_saved_with_a_byte_order_mark(synthetic_data, tmp_path):
    files = [p.relative_to(synthetic_data).as_posix() for p in sorted(synthetic_data.rglob("*.jpg"))]
    with open(tmp_path / "g.csv", "w", newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's "CSV UTF-8"
        csv.writer(handle).writerows([("file", "series"), *((path, f"s{i // 2}") for i, path in enumerate(files))])
    result = _combine(tmp_path / "c", "--source", f"A={synthetic_data}", "--groups", f"A={tmp_path / 'g.csv'}:series")
    assert result.exit_code == 0, result.output
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    result = _combine(tmp_path / "d", "--source", f"A={synthetic_data}", "--groups", f"A={tmp_path / 'bin.csv'}:s")
    assert result.exit_code == 2 and "not a CSV file of UTF-8 text" in result.output and not (tmp_path / "d").exists()


def test_combine_hard_links_on_one_file_system_and_survives_the_source_moving(synthetic_copy, tmp_path):
    result = _combine(tmp_path / "c", "--source", f"A={synthetic_copy}")
    assert result.exit_code == 0 and "hard link" in result.output, result.output
    linked = sorted((tmp_path / "c").rglob("*.jpg"))
    assert linked and not any(p.is_symlink() for p in linked) and all(p.stat().st_nlink >= 2 for p in linked)
    assert json.loads((tmp_path / "c" / "sources.json").read_text())["links"]["symbolic"] == 0
    synthetic_copy.rename(tmp_path / "moved")
    assert all(p.is_file() for p in linked)


def test_training_refuses_a_combined_folder_whose_symbolic_links_broke(synthetic_data, synthetic_copy, tmp_path,
                                                                         monkeypatch):
    def no_hard_links(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("bmcell.core.data.sources.os.link", no_hard_links)  # as when OUT is on another disk
    result = _combine(tmp_path / "c", "--source", f"A={synthetic_copy}", "--source", f"B={synthetic_data}")
    assert result.exit_code == 0 and "symbolic link" in result.output, result.output
    moved = len(list(synthetic_copy.rglob("*.jpg")))
    assert all(p.is_symlink() for p in (tmp_path / "c" / "data").rglob("*.jpg"))
    synthetic_copy.rename(tmp_path / "moved")
    trained = runner.invoke(app, ["train", "--data", str(tmp_path / "c" / "data"), "--split",
                                  str(tmp_path / "c" / "split.csv"), "--out", str(tmp_path / "run"), "--arch",
                                  "mobilevit_xxs", "--image-size", "64", "--epochs", "1", "--workers", "0"])
    assert trained.exit_code == 2, trained.output
    assert f"{moved} image link(s)" in trained.output and "no longer exist" in trained.output

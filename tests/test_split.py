"""The split is deterministic, stratified, and never puts identical bytes on both sides."""

from __future__ import annotations

import hashlib
from collections import Counter

from bmcell.data.folder import ImageRecord, apply_label_map, check_images, list_image_files
from bmcell.data.label_maps import resolve_label_map
from bmcell.data.split import read_split, stratified_split, write_split


def _records(n_per_class: dict[str, int]) -> list[ImageRecord]:
    return [ImageRecord(f"{c}/{c}_{i}.jpg", c, hashlib.sha256(f"{c}{i}".encode()).hexdigest())
            for c, n in n_per_class.items() for i in range(n)]


def test_same_seed_same_split_regardless_of_order():
    records = _records({"a": 50, "b": 30, "c": 7})
    first = stratified_split(records, 0.1, seed=3)
    assert stratified_split(list(reversed(records)), 0.1, seed=3) == first
    assert stratified_split(records, 0.1, seed=4) != first


def test_split_is_stratified():
    records = _records({"a": 100, "b": 40, "c": 10, "d": 2})
    val = Counter(r.label for r in records if stratified_split(records, 0.1, 0)[r.path] == "val")
    assert val == {"a": 10, "b": 4, "c": 1, "d": 1}


def test_identical_bytes_stay_on_one_side():
    records = _records({"a": 40, "b": 40})
    twin = records[0].sha256
    records += [ImageRecord(f"a/copy_{i}.jpg", "a", twin) for i in range(5)]
    records.append(ImageRecord("b/cross_copy.jpg", "b", twin))  # the same bytes filed under another class
    for seed in range(20):
        assignment = stratified_split(records, 0.3, seed)
        assert len({assignment[r.path] for r in records if r.sha256 == twin}) == 1


def test_split_file_round_trip_and_hash(tmp_path, synthetic_data):
    labelled = apply_label_map(list_image_files(synthetic_data), resolve_label_map(None))
    records, bad = check_images(synthetic_data, labelled)
    assert not bad
    assignment = stratified_split(records, 0.1, 0)
    sha = write_split(tmp_path / "split.json", records, assignment, 0, 0.1, sorted(set(labelled.values())), {})
    payload = read_split(tmp_path / "split.json", sha)
    assert payload["sha256"] == sha
    assert {f["path"]: f["subset"] for f in payload["files"]} == assignment

"""The split is deterministic, stratified, and never puts identical bytes on both sides."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from bmcell.core.data.folder import DatasetError, ImageRecord, apply_label_map, check_images, list_image_files
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.split import given_split, read_assignment, read_split, stratified_split, write_split


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


def _data_records(synthetic_data):
    labelled = apply_label_map(list_image_files(synthetic_data), resolve_label_map(None))
    return check_images(synthetic_data, labelled)[0]


def test_given_split_csv_is_taken_by_path(tmp_path, synthetic_data):
    records = _data_records(synthetic_data)
    wanted = {r.path: ("val" if i % 4 == 0 else "train") for i, r in enumerate(records)}
    csv_file = tmp_path / "by_patient.csv"
    csv_file.write_text("path,subset,patient\n" + "".join(f"{p},{s},x\n" for p, s in wanted.items()))
    chosen, warnings = given_split(records, read_assignment(csv_file), csv_file)
    assert chosen == wanted and warnings == []


def test_given_split_reuses_another_runs_split_json(tmp_path, synthetic_data):
    records = _data_records(synthetic_data)
    assignment = stratified_split(records, 0.2, 5)
    write_split(tmp_path / "split.json", records, assignment, 5, 0.2, sorted({r.label for r in records}), {})
    chosen, _ = given_split(records, read_assignment(tmp_path / "split.json"), tmp_path / "split.json")
    assert chosen == assignment


def test_given_split_must_cover_the_data_and_name_known_subsets(tmp_path, synthetic_data):
    records = _data_records(synthetic_data)
    partial = tmp_path / "partial.csv"
    partial.write_text("path,subset\n" + "".join(f"{r.path},train\n" for r in records[1:]) + "ghost.jpg,val\n")
    with pytest.raises(DatasetError, match="not in the split file"):
        given_split(records, read_assignment(partial), partial)
    one_sided = tmp_path / "one_sided.csv"
    one_sided.write_text("path,subset\n" + "".join(f"{r.path},train\n" for r in records))
    with pytest.raises(DatasetError, match="on one side"):
        given_split(records, read_assignment(one_sided), one_sided)
    odd = tmp_path / "odd.csv"
    odd.write_text("path,subset\nx.jpg,test\n")
    with pytest.raises(DatasetError, match="'train' or 'val'"):
        read_assignment(odd)
    no_columns = tmp_path / "no_columns.csv"
    no_columns.write_text("file,side\nx.jpg,val\n")
    with pytest.raises(DatasetError, match="path,subset"):
        read_assignment(no_columns)
    not_json = tmp_path / "split.json"
    not_json.write_text("{not json")
    with pytest.raises(DatasetError, match="not a bmcell split.json"):
        read_assignment(not_json)


def test_given_split_warns_about_duplicates_across_sides_and_unused_entries(tmp_path):
    records = [ImageRecord("a/1.jpg", "a", "s1"), ImageRecord("a/2.jpg", "a", "s1"), ImageRecord("b/3.jpg", "b", "s3")]
    assignment = {"a/1.jpg": "train", "a/2.jpg": "val", "b/3.jpg": "train", "b/gone.jpg": "val"}
    _, warnings = given_split(records, assignment, tmp_path / "s.csv")
    assert any("byte-identical" in w for w in warnings) and any("1 file(s)" in w for w in warnings)


def test_a_path_listed_as_train_and_then_val_is_an_error_naming_both_lines(tmp_path):
    """The later row used to win silently; now both lines are named. The same path twice in the same subset is
    taken once, without a word."""
    csv_file = tmp_path / "split.csv"
    csv_file.write_text("path,subset\na/1.jpg,train\nb/2.jpg,val\na/1.jpg,val\nb/2.jpg,val\n")
    with pytest.raises(DatasetError) as refused:
        read_assignment(csv_file)
    message = str(refused.value)
    assert "'a/1.jpg' is 'train' on line 2 and 'val' on line 4" in message and "b/2.jpg" not in message, message
    csv_file.write_text("path,subset\na/1.jpg,train\nb/2.jpg,val\na/1.jpg,train\n")
    assert read_assignment(csv_file) == {"a/1.jpg": "train", "b/2.jpg": "val"}


def test_a_split_row_outside_the_data_folder_is_named_in_its_warning(tmp_path):
    records = [ImageRecord("a/1.jpg", "a", "s1"), ImageRecord("b/2.jpg", "b", "s2")]
    assignment = {"a/1.jpg": "train", "b/2.jpg": "val", "../secret/x.jpg": "train", "/etc/passwd": "val",
                  "a/gone.jpg": "val"}
    chosen, warnings = given_split(records, assignment, tmp_path / "s.csv")
    assert chosen == {"a/1.jpg": "train", "b/2.jpg": "val"}
    outside = next(w for w in warnings if "outside the data folder" in w)
    assert "'../secret/x.jpg'" in outside and "'/etc/passwd'" in outside and "2 path(s)" in outside, warnings
    # Rows that are merely absent or unusable are counted, not named: unusable files were named by the bad-files
    # warning already, and naming them twice clutters the output.
    assert any("1 file(s)" in w and "a/gone.jpg" not in w for w in warnings), warnings


def test_no_image_to_set_aside_for_validation_is_an_error_that_says_why():
    """Byte-identical files stay on one side, so 3 classes of 12 copies of one picture (or of one picture each) leave
    nothing for validation: refused before any training, not an epoch later on an empty validation set."""
    same = [ImageRecord(f"{c}/{i}.jpg", c, "one-picture") for c in "abc" for i in range(12)]
    one_each = [ImageRecord(f"{c}/{i}.jpg", c, f"picture-{c}") for c in "abc" for i in range(12)]
    for records, distinct in ((same, 1), (one_each, 3)):
        with pytest.raises(DatasetError, match="set aside for validation") as refused:
            stratified_split(records, 0.1, 0)
        assert f"36 usable images hold only {distinct} different picture(s)" in str(refused.value)
    assert "val" in stratified_split(one_each + [ImageRecord("a/new.jpg", "a", "another")], 0.1, 0).values()

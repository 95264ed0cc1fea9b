"""Folder problems are clear errors before any work; bad files are skipped with one warning, or fatal when strict."""

from __future__ import annotations

import shutil

import pytest

from bmcell.core.data.folder import DatasetError, list_image_files
from bmcell.core.data.label_maps import resolve_label_map
from bmcell.core.data.prepare import scan_folder
from tests.conftest import jpeg_bytes


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_image_files(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(DatasetError, match="not a folder"):
        list_image_files(tmp_path / "x.jpg")


def test_no_class_folders(tmp_path):
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(DatasetError, match="no class sub-folders"):
        list_image_files(tmp_path)


def test_empty_class_folder(synthetic_copy):
    (synthetic_copy / "myeloblast").mkdir()
    (synthetic_copy / "myeloblast" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="myeloblast"):
        list_image_files(synthetic_copy)


def test_single_class(synthetic_copy):
    for folder in list(synthetic_copy.iterdir())[1:]:
        shutil.rmtree(folder)
    with pytest.raises(DatasetError, match="single class"):
        scan_folder(synthetic_copy, resolve_label_map(None), False, print)


def test_class_with_only_bad_files(synthetic_copy):
    for path in (synthetic_copy / "platelet").iterdir():
        path.write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable image for class.*platelet"):
        scan_folder(synthetic_copy, resolve_label_map(None), False, lambda m: None)


def test_hidden_and_non_image_files_are_ignored(synthetic_copy):
    (synthetic_copy / "platelet" / "._PLATELET_0000.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (synthetic_copy / "platelet" / "Thumbs.db").write_bytes(b"junk")
    assert not any("._" in f or f.endswith(".db") for f in list_image_files(synthetic_copy))


def _add_bad_files(root):
    (root / "platelet" / "zero.jpg").write_bytes(b"")
    (root / "platelet" / "cut.jpg").write_bytes(jpeg_bytes(1)[:200])
    (root / "basophil" / "notes.png").write_text("not a png")


def test_bad_files_named_once_and_skipped(synthetic_copy):
    _add_bad_files(synthetic_copy)
    warnings: list[str] = []
    records, classes = scan_folder(synthetic_copy, resolve_label_map(None), False, warnings.append,
                                   synthetic_copy.parent / "bad.txt")
    assert len(warnings) == 1
    assert all(name in warnings[0] for name in ("zero.jpg", "cut.jpg", "notes.png"))
    assert not {"platelet/zero.jpg", "platelet/cut.jpg", "basophil/notes.png"} & {r.path for r in records}
    assert len((synthetic_copy.parent / "bad.txt").read_text().splitlines()) == 3
    assert len(classes) == 8


def test_strict_turns_bad_files_into_an_error(synthetic_copy):
    _add_bad_files(synthetic_copy)
    with pytest.raises(DatasetError, match="(?s)--strict.*zero.jpg"):
        scan_folder(synthetic_copy, resolve_label_map(None), True, lambda m: None)


def test_broken_image_links_are_an_error_naming_how_many(synthetic_copy, tmp_path):
    from bmcell.core.data.folder import list_images_anywhere

    for name in ("gone_1.jpg", "gone_2.jpg"):
        (synthetic_copy / "platelet" / name).symlink_to(tmp_path / "elsewhere" / name)
    (synthetic_copy / "platelet" / "notes.txt").symlink_to(tmp_path / "elsewhere" / "notes.txt")  # not an image
    for lister in (list_image_files, list_images_anywhere):
        with pytest.raises(DatasetError, match=r"2 image link\(s\) .* no longer exist \(e.g. .*gone_1.jpg"):
            lister(synthetic_copy)

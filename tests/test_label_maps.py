"""Built-in and file label maps, and the errors that catch a map that does not fit the data."""

from __future__ import annotations

import json

import pytest

from bmcell.core.data.folder import DatasetError, apply_label_map, list_image_files
from bmcell.core.data.label_maps import LabelMapError, resolve_label_map
from tests.conftest import jpeg_bytes

AML_CLASSES = ["BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB", "MON", "MYB", "MYO", "NGB", "NGS", "PMB", "PMO"]


def _touch_images(root, names):
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(i))


def test_identity_keeps_folder_names(synthetic_data):
    files = list_image_files(synthetic_data)
    labelled = apply_label_map(files, resolve_label_map(None))
    assert {f: f.split("/")[0] for f in files} == labelled


def test_aml_fab8_on_the_lmu_layout(tmp_path):
    _touch_images(tmp_path, [f"{c}/{c}_0001.tiff" for c in AML_CLASSES])
    labelled = apply_label_map(list_image_files(tmp_path), resolve_label_map("aml-fab8"))
    assert labelled["MYO/MYO_0001.tiff"] == "myeloblast"
    assert labelled["PMO/PMO_0001.tiff"] == "promyelocyte"
    assert labelled["MYB/MYB_0001.tiff"] == "myelocyte"
    assert labelled["MMZ/MMZ_0001.tiff"] == "metamyelocyte"
    assert labelled["NGB/NGB_0001.tiff"] == "band_neutrophil"
    assert labelled["NGS/NGS_0001.tiff"] == "segmented_neutrophil"
    assert labelled["MON/MON_0001.tiff"] == "monocyte"
    assert {labelled[f"{c}/{c}_0001.tiff"] for c in ("BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MOB", "PMB")} == {"other"}
    assert resolve_label_map("aml-fab8").class_order(set(labelled.values()))[-1] == "other"
    assert len(set(labelled.values())) == 8


def test_pbc_granulocytic_uses_file_prefixes(tmp_path):
    names = ["ig/PMY_1.jpg", "ig/MY_2.jpg", "ig/MMY_3.jpg", "ig/IG_4.jpg", "neutrophil/BNE_5.jpg",
             "neutrophil/SNE_6.jpg", "neutrophil/NEUTROPHIL_7.jpg", "monocyte/MO_8.jpg", "platelet/PLATELET_9.jpg"]
    _touch_images(tmp_path, names)
    labelled = apply_label_map(list_image_files(tmp_path), resolve_label_map("pbc-granulocytic"))
    assert labelled == {
        "ig/PMY_1.jpg": "promyelocyte", "ig/MY_2.jpg": "myelocyte", "ig/MMY_3.jpg": "metamyelocyte",
        "ig/IG_4.jpg": "other", "neutrophil/BNE_5.jpg": "band_neutrophil", "neutrophil/SNE_6.jpg": "segmented_neutrophil",
        "neutrophil/NEUTROPHIL_7.jpg": "other", "monocyte/MO_8.jpg": "monocyte", "platelet/PLATELET_9.jpg": "other",
    }


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_map_merges_drops_and_orders(tmp_path, suffix):
    _touch_images(tmp_path / "data", ["a/A_1.jpg", "b/B_1.jpg", "c/C_1.jpg", "d/D_1.jpg"])
    spec = {"name": "mine", "rules": {"a": "ab", "b": "ab", "d": None}, "classes": ["c", "ab"]}
    path = tmp_path / f"map{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(spec))
    else:
        path.write_text("name: mine\nrules:\n  a: ab\n  b: ab\n  d: null\nclasses: [c, ab]\n")
    label_map = resolve_label_map(str(path))
    labelled = apply_label_map(list_image_files(tmp_path / "data"), label_map)
    assert labelled == {"a/A_1.jpg": "ab", "b/B_1.jpg": "ab", "c/C_1.jpg": "c"}
    assert label_map.class_order(set(labelled.values())) == ["c", "ab"]


def test_map_errors_are_actionable(tmp_path):
    with pytest.raises(LabelMapError, match="neither a built-in"):
        resolve_label_map("no-such-map")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: {a: b}\ncolour: red\n")
    with pytest.raises(LabelMapError, match="unknown keys"):
        resolve_label_map(str(bad))
    bad.write_text("rules: [a, b]\n")
    with pytest.raises(LabelMapError, match="'rules' maps"):
        resolve_label_map(str(bad))
    bad.write_text("rules: {a: [b\n")
    with pytest.raises(LabelMapError, match="not valid YAML"):
        resolve_label_map(str(bad))


def test_rule_matching_nothing_is_an_error(tmp_path):
    _touch_images(tmp_path, ["a/A_1.jpg", "b/B_1.jpg"])
    path = tmp_path.parent / "typo.json"
    path.write_text(json.dumps({"rules": {"neutrofil": "neutrophil"}}))
    with pytest.raises(DatasetError, match="neutrofil"):
        apply_label_map(list_image_files(tmp_path), resolve_label_map(str(path)))


def test_a_map_that_drops_every_class_says_so(tmp_path):
    from bmcell.core.data.prepare import scan_folder

    _touch_images(tmp_path / "data", ["a/A_1.jpg", "b/B_1.jpg"])
    path = tmp_path / "none.yaml"
    path.write_text("name: none\nrules: {a: null, b: null}\n")
    with pytest.raises(DatasetError, match="label map 'none' drops every image") as refused:
        scan_folder(tmp_path / "data", resolve_label_map(str(path)), False, print)
    assert "single class" not in str(refused.value)


def test_a_class_map_key_that_matches_no_folder_is_refused(tmp_path):
    """`fooo: ig` where the folder is `foo` was ignored without a word (crosslab left foo unscored); like a label-map
    rule that matches no file, it is refused, by crosslab (over all its --data folders) and by finetune."""
    from types import SimpleNamespace

    from bmcell.core.crosslab import crosslab_report

    _touch_images(tmp_path / "lab", [f"{c}/{c}_{i}.jpg" for c in ("foo", "neutrophil") for i in range(6)])
    typo = {"fooo": "ig"}
    model = SimpleNamespace(classes=["ig", "neutrophil"])  # refused before the model is used
    with pytest.raises(LabelMapError, match=r"the --data folders: \['fooo'\].*foo, neutrophil"):
        crosslab_report(model, [tmp_path / "lab"], tmp_path / "report", "cpu", typo, warn=print)
    assert not (tmp_path / "report").exists()
    from bmcell.core.finetune import read_lab_cells

    with pytest.raises(LabelMapError, match=r"match no class folder of .*lab: \['fooo'\]"):
        read_lab_cells(tmp_path / "lab", ["ig", "neutrophil"], typo, print)
    from bmcell.core.data.label_maps import check_class_map

    check_class_map({"foo": "ig", "neutrophil": None}, {"foo", "neutrophil"}, "x")  # every key names a folder

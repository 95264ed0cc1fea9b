"""Label maps: which target class each source label (class folder, or folder + file-name prefix) becomes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from bmcell.core.errors import BmcellError


class LabelMapError(BmcellError):
    """A label map that is malformed or does not fit the data."""


@dataclass(frozen=True)
class LabelMap:
    """Source label → target class rules.

    Rule keys are a class folder (``monocyte``) or a folder and a file-name prefix (``ig/PMY``; the prefix is the
    file stem up to its first ``_``). A ``None`` target drops that source. Sources no rule names go to ``default``
    when it is set, else keep their folder name. ``classes`` fixes the order of the target classes.
    """

    name: str
    rules: dict[str, str | None] = field(default_factory=dict)
    default: str | None = None
    classes: tuple[str, ...] | None = None

    def source_label(self, relpath: str) -> tuple[str, str]:
        """The (folder, prefix) source label of a file path relative to the data root."""
        path = PurePosixPath(relpath)
        return path.parts[0], path.stem.split("_", 1)[0]

    def target(self, relpath: str) -> str | None:
        """The target class of one file, or None when the map drops it."""
        folder, prefix = self.source_label(relpath)
        for key in (f"{folder}/{prefix}", folder):
            if key in self.rules:
                return self.rules[key]
        return self.default if self.default is not None else folder

    def class_order(self, present: set[str]) -> list[str]:
        """The target classes in their canonical order: the map's list, else sorted names."""
        if self.classes is None:
            return sorted(present)
        unknown = sorted(present - set(self.classes))
        if unknown:
            raise LabelMapError(f"label map {self.name!r} produces classes not in its 'classes' list: {unknown}")
        return list(self.classes)

    def to_dict(self) -> dict:
        """A JSON-ready form, the same schema a label-map file uses."""
        return {"name": self.name, "rules": dict(self.rules), "default": self.default,
                "classes": list(self.classes) if self.classes is not None else None}

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "LabelMap":
        """Build and validate a label map from its JSON/YAML form."""
        if not isinstance(data, dict):
            raise LabelMapError(f"{origin}: a label map is a mapping with keys name, rules, default, classes")
        unknown = set(data) - {"name", "rules", "default", "classes"}
        if unknown:
            raise LabelMapError(f"{origin}: unknown keys {sorted(unknown)}; allowed: name, rules, default, classes")
        rules = data.get("rules") or {}
        if not isinstance(rules, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in rules.items()
        ):
            raise LabelMapError(f"{origin}: 'rules' maps 'folder' or 'folder/PREFIX' to a class name (or null to drop)")
        classes = data.get("classes")
        if classes is not None and (not isinstance(classes, list) or len(set(classes)) != len(classes)):
            raise LabelMapError(f"{origin}: 'classes' is a list of distinct class names")
        return cls(
            name=str(data.get("name") or origin),
            rules=dict(rules),
            default=data.get("default"),
            classes=tuple(classes) if classes is not None else None,
        )


def check_class_map(class_map: dict[str, str | None] | None, folder_classes: set[str], where: str) -> None:
    """Refuse a --class-map key that names no class folder of the data (`crosslab`, `finetune`): a mistyped folder
    name would otherwise leave its folder unmapped without a word, as a label-map rule that matches no file would."""
    unmatched = sorted(set(class_map or {}) - set(folder_classes))
    if unmatched:
        raise LabelMapError(f"--class-map has keys that match no class folder of {where}: {unmatched}; its keys are "
                            f"folder names (there: {', '.join(sorted(folder_classes))}): check their spelling")


def _aml_fab8() -> LabelMap:
    """AML-Cytomorphology_LMU's 15 classes to the paper's 8 (maturation series + monocyte + other)."""
    keep = {"MYO": "myeloblast", "PMO": "promyelocyte", "MYB": "myelocyte", "MMZ": "metamyelocyte",
            "NGB": "band_neutrophil", "NGS": "segmented_neutrophil", "MON": "monocyte"}
    return LabelMap("aml-fab8", rules=dict(keep), default="other", classes=(*keep.values(), "other"))


def _pbc_granulocytic() -> LabelMap:
    """PBC's file-name prefixes along the granulocytic series, monocytes, and everything else as other."""
    series = {"ig/PMY": "promyelocyte", "ig/MY": "myelocyte", "ig/MMY": "metamyelocyte",
              "neutrophil/BNE": "band_neutrophil", "neutrophil/SNE": "segmented_neutrophil", "monocyte": "monocyte"}
    return LabelMap("pbc-granulocytic", rules=series, default="other", classes=(*series.values(), "other"))


BUILTIN_LABEL_MAPS = {
    "identity": lambda: LabelMap("identity"),
    "aml-fab8": _aml_fab8,
    "pbc-granulocytic": _pbc_granulocytic,
}


def resolve_label_map(spec: str | None) -> LabelMap:
    """A built-in label map by name, or one read from a YAML/JSON file; None means identity."""
    if spec is None or spec in BUILTIN_LABEL_MAPS:
        return BUILTIN_LABEL_MAPS[spec or "identity"]()
    path = Path(spec)
    if not path.is_file():
        raise LabelMapError(
            f"label map {spec!r} is neither a built-in ({', '.join(BUILTIN_LABEL_MAPS)}) nor an existing file"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise LabelMapError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}") from None
    return LabelMap.from_dict(data, str(path))

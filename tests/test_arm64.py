"""ARM64 parity: the Debian package reader, the environment's refusals and the app's choice on an ARM verdict (a small
model's artefacts on ARM64 kernels are run in tests/test_export.py, beside its export)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bmcell.jobs.verify import arm64_parity
from export.arm64 import debian
from export.arm64.environment import Arm64Error, default_root, ready_environment


def deb_bytes(files: dict[str, bytes]) -> bytes:
    """A minimal .deb (an ar archive with a data.tar.xz) holding files."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]
    out = b"!<arch>\n"
    for name, body in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" if len(body) % 2 else b""
    return out


INDEX = """Package: app
Version: 1.0
Pre-Depends: libc6 (>= 2.36)
Depends: libfoo:any | libbar, tzdata, virtual-thing
Filename: pool/a/app.deb
SHA256: {app}

Package: libc6
Version: 2.36
Filename: pool/l/libc6.deb
SHA256: 00

Package: libfoo
Version: 3
Depends: libc6
Filename: pool/l/libfoo.deb
SHA256: 00

Package: tzdata
Version: 1
Filename: pool/t/tzdata.deb
SHA256: 00
"""


def test_closure_follows_first_alternatives_and_skips_data_and_virtual_packages():
    index = debian._parse(INDEX.format(app="00"))
    assert index["app"].depends == ("libc6", "libfoo", "tzdata", "virtual-thing")
    names = [p.name for p in debian.closure(index, ["app"], frozenset({"tzdata"}))]
    assert names == ["app", "libc6", "libfoo"]
    with pytest.raises(debian.DebianError, match="no package nothing"):
        debian.closure(index, ["nothing"], frozenset())


def test_unpack_checks_the_digest_and_extracts_one_member_or_all(tmp_path):
    import hashlib

    deb = deb_bytes({"./usr/bin/tool": b"binary", "./usr/share/doc/README": b"text"})
    package = debian._parse(INDEX.format(app=hashlib.sha256(deb).hexdigest()))["app"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "app.deb").write_bytes(deb)  # as if fetched before: no network
    debian.unpack(package, tmp_path / "one", downloads, only="./usr/bin/tool")
    assert (tmp_path / "one/usr/bin/tool").read_bytes() == b"binary"
    assert not (tmp_path / "one/usr/share").exists()
    debian.unpack(package, tmp_path / "all", downloads)
    assert (tmp_path / "all/usr/share/doc/README").read_bytes() == b"text"
    (downloads / "app.deb").write_bytes(deb[:-1] + b"x")
    with pytest.raises(debian.DebianError, match="does not match its SHA-256"):
        debian.unpack(package, tmp_path / "bad", downloads)


def test_not_a_deb_is_refused():
    with pytest.raises(debian.DebianError, match="not a Debian package"):
        debian._data_member(b"<html>", "pool/x.deb")


def test_an_unbuilt_environment_is_one_line_saying_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BMCELL_ARM64", str(tmp_path / "none"))
    assert default_root() == tmp_path / "none"
    with pytest.raises(Arm64Error, match=r"not built in .*none \(missing: qemu, sysroot, site, runner\): run "
                                         r"`bmcell setup-arm64` first"):
        ready_environment()
    with pytest.raises(Arm64Error, match="unknown --arch 'riscv'"):
        arm64_parity("riscv", None)
    assert arm64_parity("native", ["max"]) is None


def test_missing_cross_compiler_is_named_with_its_package(monkeypatch):
    from export.arm64 import environment

    monkeypatch.setattr(environment.shutil, "which", lambda name: None if "aarch64" in name else "/usr/bin/" + name)
    problems = environment.missing_prerequisites()
    assert "aarch64-linux-gnu-g++ not found: apt-get install g++-aarch64-linux-gnu" in problems
    with pytest.raises(Arm64Error, match="not found: apt-get install"):
        environment.build_environment(Path("/nonexistent-arm64"), lambda line: None)


def write_parity(folder: Path, rows: list[dict]) -> None:
    (folder / "parity.json").write_text(json.dumps({"artefacts": rows}))


PASS = {"status": "pass", "answer_changes": 0, "failures": []}


@pytest.mark.parametrize("arm_row, expected", [
    (None, "executorch-int8"),  # no ARM rows: this machine's verdict
    (PASS, "executorch-int8"),
    ({"status": "pass", "answer_changes": 1, "failures": []}, "executorch-fp32"),
    ({"status": "fail", "answer_changes": 0, "failures": ["SQNR 3.0 dB < 15.0 dB"]}, "executorch-fp32"),
])
def test_android_auto_precision_rests_on_the_arm_verdict(tmp_path, arm_row, expected):
    from export.apps import APPS, choose_artefact

    manifest = {"artefacts": [{"name": "executorch-int8", "precision": "int8"},
                              {"name": "executorch-fp32", "precision": "fp32"}]}
    rows = [{"name": "executorch-int8", "arch": "x86_64"} | PASS, {"name": "executorch-fp32", "arch": "x86_64"} | PASS]
    if arm_row is not None:
        rows.append({"name": "executorch-int8", "arch": "arm64", "cpu": "max"} | arm_row)
    write_parity(tmp_path, rows)
    assert choose_artefact(manifest, tmp_path, APPS["android"], "auto")["name"] == expected
    if expected == "executorch-fp32":
        with pytest.raises(ValueError, match="on arm64 max"):
            choose_artefact(manifest, tmp_path, APPS["android"], "int8")



def test_instruction_table_compares_each_artefact_with_the_first_on_the_same_cpu_model():
    from export.bench import instructions_markdown

    report = {"instruction_cpus": {"cortex-a53": "cortex-a53", "max": "max,sme=off"}, "rows": [
        {"name": "pytorch-eager"},
        {"name": "executorch-fp32", "instructions_cortex-a53": 200e6, "instructions_max": 100e6},
        {"name": "executorch-int8", "instructions_cortex-a53": 150e6, "instructions_max": 50e6}]}
    text = "\n".join(instructions_markdown(report))
    assert "| executorch-int8 | 150.0 | 0.75x | 50.0 | 0.50x |" in text
    assert "max = `-cpu max,sme=off`" in text
    assert instructions_markdown(report | {"instruction_cpus": None}) == []


def test_a_failed_count_is_one_line(monkeypatch, tmp_path):
    from export import bench
    from export.formats import FORMATS

    def broken(*args):
        raise bench.ExportError("executorch-int8 on arm64 max failed: qemu: uncaught target signal 11")

    monkeypatch.setattr(bench, "instructions_per_inference", broken)
    with pytest.raises(Arm64Error, match="cannot count instructions: executorch-int8 on arm64 max failed"):
        bench.instruction_counts(None, FORMATS["executorch-int8"], tmp_path / "m.pte", np.zeros((1, 3, 8, 8)))

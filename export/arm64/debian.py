"""Debian packages for another architecture, fetched and unpacked without apt or root: the signed release file is
checked with gpgv against Debian's archive keyring, the package index against the release file's SHA-256, and every
package against the index's."""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import shutil
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DebianError(RuntimeError):
    """A package that cannot be fetched, verified or unpacked, in one line."""


@dataclass(frozen=True)
class Package:
    """One binary package of an index: what it needs and where its file lies."""

    name: str
    version: str
    filename: str
    sha256: str
    depends: tuple[str, ...]


def _download(url: str) -> bytes:
    """The bytes at url, or a DebianError naming it."""
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.read()
    except OSError as error:
        raise DebianError(f"cannot download {url}: {error}") from error


def _verified_release(suite: str, cache: Path) -> str:
    """The suite's InRelease text, its signature checked by gpgv against Debian's archive keyring."""
    if shutil.which("gpgv") is None or not KEYRING.is_file():
        raise DebianError(f"gpgv or {KEYRING} not found: apt-get install gpgv debian-archive-keyring")
    path = cache / f"{suite}-InRelease"
    path.write_bytes(_download(f"{MIRROR}/dists/{suite}/InRelease"))
    checked = subprocess.run(["gpgv", "--keyring", str(KEYRING), str(path)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise DebianError(f"the signature of {suite}'s release file does not verify: {checked.stderr.strip()}")
    return path.read_text(encoding="utf-8")


def _index_digest(release: str, index: str) -> str:
    """The SHA-256 the release file gives for one of its index files."""
    sha_section = release.split("SHA256:", 1)[1]
    match = re.search(rf"^ ([0-9a-f]{{64}})\s+\d+\s+{re.escape(index)}$", sha_section, re.MULTILINE)
    if match is None:
        raise DebianError(f"the release file lists no {index}")
    return match.group(1)


def _checked(data: bytes, sha256: str, what: str) -> bytes:
    """data, or a DebianError when its SHA-256 is not the expected one."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DebianError(f"{what} does not match its SHA-256 in the signed index (a broken download or mirror)")
    return data


def _parse(text: str) -> dict[str, Package]:
    """The index's packages by name."""
    packages = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" not in fields:
            continue
        needs = ", ".join(filter(None, [fields.get("Pre-Depends", ""), fields.get("Depends", "")]))
        depends = tuple(alternative.split("|")[0].split("(")[0].split(":")[0].strip()
                        for alternative in needs.split(",") if alternative.strip())
        packages[fields["Package"]] = Package(fields["Package"], fields["Version"], fields["Filename"],
                                              fields["SHA256"], depends)
    return packages


def _verified_index(suite: str, name: str, cache: Path) -> str:
    """One of the suite's .xz index files (e.g. main/source/Sources.xz), verified from the signed release file down."""
    cache.mkdir(parents=True, exist_ok=True)
    release = _verified_release(suite, cache)
    data = _checked(_download(f"{MIRROR}/dists/{suite}/{name}"), _index_digest(release, name), f"{suite} {name}")
    return lzma.decompress(data).decode("utf-8")


def package_index(suite: str, architecture: str, cache: Path) -> dict[str, Package]:
    """The suite's main index for one architecture."""
    return _parse(_verified_index(suite, f"main/binary-{architecture}/Packages.xz", cache))


def source_tarball(suite: str, package: str, cache: Path) -> bytes:
    """The upstream (orig) tarball of a source package, verified from the signed release file down."""
    sources = _verified_index(suite, "main/source/Sources.xz", cache)
    stanza = next((s for s in sources.split("\n\n") if re.search(rf"^Package: {re.escape(package)}$", s, re.M)), None)
    if stanza is None:
        raise DebianError(f"no source package {package} in {suite}")
    directory = re.search(r"^Directory: (.*)$", stanza, re.M).group(1)
    digests = stanza.split("Checksums-Sha256:", 1)[1]
    match = re.search(r"^ ([0-9a-f]{64}) \d+ (\S+\.orig\.tar\.\w+)$", digests, re.M)
    if match is None:
        raise DebianError(f"source package {package} in {suite} lists no upstream tarball")
    return _checked(_download(f"{MIRROR}/{directory}/{match.group(2)}"), match.group(1), match.group(2))


def closure(index: dict[str, Package], roots: list[str], skip: frozenset[str]) -> list[Package]:
    """The roots and everything they depend on, leaving out the skipped names (data and tools a program never
    opens); a dependency the index lacks (a virtual package) is left out too."""
    found: dict[str, Package] = {}
    waiting = list(roots)
    while waiting:
        name = waiting.pop()
        if name in found or name in skip:
            continue
        if name not in index:
            if name in roots:
                raise DebianError(f"no package {name} in the index")
            continue
        found[name] = index[name]
        waiting.extend(index[name].depends)
    return sorted(found.values(), key=lambda p: p.name)


def _data_member(deb: bytes, what: str) -> tarfile.TarFile:
    """The data.tar.* archive inside a .deb (an ar archive)."""
    if not deb.startswith(b"!<arch>\n"):
        raise DebianError(f"{what} is not a Debian package")
    offset = 8
    while offset < len(deb):
        header = deb[offset:offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        body = deb[offset + 60:offset + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        offset += 60 + size + size % 2
    raise DebianError(f"{what} has no data archive")


def unpack(package: Package, root: Path, downloads: Path, only: str | None = None) -> None:
    """Fetch one package (kept in downloads), check its SHA-256 and unpack its files (or only one) under root."""
    downloads.mkdir(parents=True, exist_ok=True)
    kept = downloads / Path(package.filename).name
    deb = kept.read_bytes() if kept.is_file() else _download(f"{MIRROR}/{package.filename}")
    _checked(deb, package.sha256, package.filename)
    kept.write_bytes(deb)
    with _data_member(deb, package.filename) as archive:
        if only is None:
            archive.extractall(root, filter="tar")
        else:
            archive.extract(only, root, filter="tar")

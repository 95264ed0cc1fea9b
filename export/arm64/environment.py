"""The aarch64 environment that runs artefacts on ARM64 kernels under emulation, built from the package registries
into a cache folder without root: Debian's qemu-user (its static qemu-aarch64), an aarch64 Python 3.11 and C/C++
runtime unpacked from Debian's arm64 packages, the aarch64 wheels of the runtimes this venv has (same versions), and
ExecuTorch's runner compiled for aarch64 against that wheel's own libraries. Nothing needs binfmt registration.

Each part is built once and marked complete; `build_environment` is idempotent and `environment_status` says what is
there and what is missing."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bmcell.core.errors import BmcellError
from export.arm64.debian import DebianError, closure, package_index, source_tarball, unpack

# Python 3.11 as in the venv: Debian 12's packages. qemu-aarch64 from Debian 13 (qemu 10, static): Debian 12's
# qemu 7.2 emulates SME wrongly (XNNPACK's int8 kernels for SME cores give other logits under its "max" CPU only).
PYTHON_SUITE = "bookworm"
QEMU_SUITE = "trixie"
PYTHON_PACKAGES = ["python3.11-minimal", "libpython3.11-stdlib", "libstdc++6"]
# Data and tools the runners never open.
SKIPPED_PACKAGES = frozenset({"tzdata", "media-types", "netbase", "readline-common", "debconf", "perl-base", "dpkg",
                              "install-info", "libc-bin", "gcc-12-base"})
WHEELS = ("numpy", "onnxruntime", "executorch")  # at this venv's versions
COMPILER = "aarch64-linux-gnu-g++"
RUNNER_SOURCE = Path(__file__).with_name("executorch_runner.cpp")
ORT_RUNNER = Path(__file__).with_name("onnxruntime_runner.py")
# The libraries ExecuTorch's Python bindings link: the same kernels and backend as on x86-64.
EXECUTORCH_LIBRARIES = ("executorch", "executorch_kernels_optimized", "executorch_backend_xnnpack",
                        "executorch_threadpool")
ENVIRONMENT_VARIABLE = "BMCELL_ARM64"
# Instruction counts need a qemu that loads TCG plugins: Debian's qemu-user package of the host (dynamic; Debian 13's
# static one cannot), with our plugin built against the qemu-plugin.h of Debian 12's qemu source. That qemu (7.2)
# cannot import onnxruntime 1.32 (segfault) and emulates SME wrongly, so it counts ExecuTorch programs, with SME off.
COUNTER_SOURCE = Path(__file__).with_name("count_instructions.c")
HOST_QEMU = "qemu-aarch64"


class Arm64Error(BmcellError):
    """The aarch64 environment is missing a prerequisite or a part, in one line with what to do."""


@dataclass(frozen=True)
class Arm64Environment:
    """Where the parts of a built environment lie."""

    root: Path

    @property
    def qemu(self) -> Path:
        """The static qemu-aarch64."""
        return self.root / "qemu" / "qemu-aarch64"

    @property
    def sysroot(self) -> Path:
        """The unpacked arm64 packages (qemu's -L prefix)."""
        return self.root / "sysroot"

    @property
    def python(self) -> Path:
        """The aarch64 Python 3.11."""
        return self.sysroot / "usr" / "bin" / "python3.11"

    @property
    def site(self) -> Path:
        """The aarch64 wheels, installed with pip --target."""
        return self.root / "site"

    @property
    def executorch_runner(self) -> Path:
        """ExecuTorch's runner, compiled for aarch64."""
        return self.root / "bin" / "executorch_runner"

    @property
    def counter(self) -> Path:
        """The instruction-counting plugin for the host's qemu-aarch64 (optional part)."""
        return self.root / "counter" / "libcount_instructions.so"


def output_line(text: str, first: bool = False) -> str:
    """The last line of a process's output (where a program says why it failed), or the first (where a compiler
    names the first error), or ''."""
    lines = text.strip().splitlines() or [""]
    return lines[0] if first else lines[-1]


def _versions() -> dict[str, str]:
    """This venv's versions of the runtimes whose aarch64 wheels the environment holds."""
    return {name: importlib.metadata.version(name) for name in WHEELS}


def default_root(root: Path | None = None) -> Path:
    """root when given, else $BMCELL_ARM64, else a cache folder keyed on the runtimes' versions and the runners'
    sources."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE])
    sources = [path.read_bytes() for path in (RUNNER_SOURCE, ORT_RUNNER, COUNTER_SOURCE)]
    key = hashlib.sha256(repr([sorted(_versions().items()), PYTHON_SUITE, QEMU_SUITE, PYTHON_PACKAGES, sources]
                              ).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "bmcell" / f"arm64-{key}"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to build the environment, each with the command that installs it."""
    missing = []
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        missing.append(f"the arm64 environment is built on x86-64 Linux (this is {platform.system()} "
                       f"{platform.machine()})")
    if shutil.which(COMPILER) is None:
        missing.append(f"{COMPILER} not found: apt-get install g++-aarch64-linux-gnu")
    if shutil.which("gpgv") is None or not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        missing.append("gpgv or Debian's archive keyring not found: apt-get install gpgv debian-archive-keyring")
    return missing


PARTS = ("qemu", "sysroot", "site", "runner")  # parity needs every one
OPTIONAL_PARTS = ("counter",)  # instruction counts


def _marker(env: Arm64Environment, part: str) -> Path:
    """The file that says a part was built completely."""
    return env.root / f".{part}-complete"


def environment_status(env: Arm64Environment) -> dict[str, bool]:
    """Which parts are built."""
    return {part: _marker(env, part).is_file() for part in PARTS + OPTIONAL_PARTS}


def _build_qemu(env: Arm64Environment) -> str:
    """Unpack qemu-aarch64 (static) from Debian's amd64 qemu-user package."""
    index = package_index(QEMU_SUITE, "amd64", env.root / "indexes")
    package = index["qemu-user"]
    staging = env.root / "qemu-staging"
    shutil.rmtree(staging, ignore_errors=True)
    unpack(package, staging, env.root / "downloads", only="./usr/bin/qemu-aarch64")
    env.qemu.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging / "usr" / "bin" / "qemu-aarch64", env.qemu)
    shutil.rmtree(staging)
    return f"qemu-aarch64 {package.version} (Debian {QEMU_SUITE})"


def _build_sysroot(env: Arm64Environment) -> str:
    """Unpack Python 3.11 and the C/C++ runtime from Debian's arm64 packages."""
    index = package_index(PYTHON_SUITE, "arm64", env.root / "indexes")
    shutil.rmtree(env.sysroot, ignore_errors=True)
    packages = closure(index, PYTHON_PACKAGES, SKIPPED_PACKAGES)
    for package in packages:
        unpack(package, env.sysroot, env.root / "downloads")
    return f"{len(packages)} arm64 packages (Debian {PYTHON_SUITE}), Python {index['python3.11-minimal'].version}"


def _build_site(env: Arm64Environment) -> str:
    """pip-install the aarch64 wheels of this venv's runtime versions, without running them."""
    shutil.rmtree(env.site, ignore_errors=True)
    wanted = [f"{name}=={version}" for name, version in _versions().items()]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--implementation", "cp",
               "--target", str(env.site), *wanted]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise Arm64Error(f"pip could not install the aarch64 wheels {' '.join(wanted)}: "
                         f"{output_line(done.stderr or done.stdout)}")
    return ", ".join(wanted)


def _build_runner(env: Arm64Environment) -> str:
    """Compile the ExecuTorch runner for aarch64 against the wheel's headers and libraries."""
    package = env.site / "executorch"
    include = package / "include"
    env.executorch_runner.parent.mkdir(parents=True, exist_ok=True)
    command = [COMPILER, "-O2", "-std=c++17", "-w", "-DC10_USING_CUSTOM_GENERATED_MACROS",
               "-DET_EVENT_TRACER_ENABLED", f"-I{include}",
               f"-I{include / 'executorch' / 'runtime' / 'core' / 'portable_type' / 'c10'}",
               "-o", str(env.executorch_runner), str(RUNNER_SOURCE), f"-L{package / 'lib'}", "-Wl,--no-as-needed",
               *[f"-l{name}" for name in EXECUTORCH_LIBRARIES], "-Wl,-rpath,$ORIGIN/../site/executorch/lib"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise Arm64Error(f"{COMPILER} could not build the ExecuTorch runner: {output_line(done.stderr, first=True)}")
    return f"{env.executorch_runner.name} (against executorch {_versions()['executorch']})"


def _build_counter(env: Arm64Environment) -> str:
    """Compile the instruction-counting plugin for the host's qemu-aarch64, against its source's qemu-plugin.h."""
    host = shutil.which(HOST_QEMU)
    if host is None:
        raise Arm64Error(f"{HOST_QEMU} not found: apt-get install qemu-user (only for instruction counts)")
    version = subprocess.run([host, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    if " 7.2." not in version:
        raise Arm64Error(f"the host's {version!r} is not Debian {PYTHON_SUITE}'s qemu 7.2, whose plugin header this "
                         "builds against")
    tarball = source_tarball(PYTHON_SUITE, "qemu", env.root / "indexes")
    env.counter.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("include/qemu/qemu-plugin.h"))
        (env.counter.parent / "qemu-plugin.h").write_bytes(archive.extractfile(member).read())
    done = subprocess.run(["cc", "-O2", "-shared", "-fPIC", f"-I{env.counter.parent}", "-o", str(env.counter),
                           str(COUNTER_SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise Arm64Error(f"cc could not build the counting plugin: {output_line(done.stderr, first=True)}")
    return f"{env.counter.name} for {version}"


BUILDERS: dict[str, Callable[[Arm64Environment], str]] = {
    "qemu": _build_qemu, "sysroot": _build_sysroot, "site": _build_site, "runner": _build_runner,
    "counter": _build_counter}


def build_environment(root: Path | None = None, say: Callable[[str], None] = print) -> Arm64Environment:
    """Build every part not yet built (each once; an interrupted part is rebuilt), then check it runs."""
    problems = missing_prerequisites()
    if problems:
        raise Arm64Error(problems[0] + (f" (and {len(problems) - 1} more: see `bmcell setup-arm64`)"
                                        if len(problems) > 1 else ""))
    env = Arm64Environment(default_root(root))
    env.root.mkdir(parents=True, exist_ok=True)
    for part in PARTS + OPTIONAL_PARTS:
        if _marker(env, part).is_file():
            say(f"{part:<8} present")
            continue
        say(f"{part:<8} building ...")
        try:
            built = BUILDERS[part](env)
        except (DebianError, Arm64Error) as error:
            if part not in OPTIONAL_PARTS:
                raise Arm64Error(str(error)) from error
            say(f"{part:<8} unavailable: {error}")
            continue
        _marker(env, part).write_text(built + "\n", encoding="utf-8")
        say(f"{part:<8} {built}")
    for scratch in ("downloads", "indexes"):  # kept only while a part may need building again
        shutil.rmtree(env.root / scratch, ignore_errors=True)
    check_environment(env)
    return env


def emulated(env: Arm64Environment, cpu: str, program: list[str], counted: bool = False,
             ) -> subprocess.CompletedProcess:
    """Run an aarch64 program (path and arguments) under qemu-aarch64 with that CPU model; counted: under the
    host's qemu with the instruction-counting plugin (its stderr ends with "bmcell-instructions N")."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(env.site), "PYTHONNOUSERSITE": "1", "LC_ALL": "C",
                   "OMP_NUM_THREADS": "1"}
    qemu = [shutil.which(HOST_QEMU) or HOST_QEMU, "-plugin", str(env.counter)] if counted else [str(env.qemu)]
    return subprocess.run([*qemu, "-L", str(env.sysroot), "-cpu", cpu, *program], capture_output=True, text=True,
                          env=environment)


def check_environment(env: Arm64Environment) -> None:
    """Run the aarch64 Python with the runtimes, and the runner, once each; an Arm64Error says what failed."""
    python = emulated(env, "cortex-a53", [str(env.python), "-s", "-c",
                                          "import numpy, onnxruntime; print(onnxruntime.__version__)"])
    if python.returncode != 0:
        raise Arm64Error(f"the aarch64 Python cannot import its runtimes in {env.root}: "
                         f"{output_line(python.stderr)}; delete the folder and run "
                         "`bmcell setup-arm64` again")
    runner = emulated(env, "cortex-a53", [str(env.executorch_runner)])
    if "usage:" not in runner.stderr:
        raise Arm64Error(f"the aarch64 ExecuTorch runner does not start in {env.root}: "
                         f"{output_line(runner.stderr)}; delete the folder and run "
                         "`bmcell setup-arm64` again")
    if environment_status(env)["counter"]:
        counted = emulated(env, "cortex-a53", [str(env.executorch_runner)], counted=True)
        if "bmcell-instructions " not in counted.stderr:
            raise Arm64Error(f"the host's {HOST_QEMU} does not load the counting plugin in {env.root}: "
                             f"{output_line(counted.stderr)}; delete "
                             f"{_marker(env, 'counter')} and run `bmcell setup-arm64` again")


def ready_environment() -> Arm64Environment:
    """The built environment, or an Arm64Error in one line saying how to build it."""
    env = Arm64Environment(default_root())
    missing = [part for part, built in environment_status(env).items() if not built and part in PARTS]
    if missing:
        raise Arm64Error(f"the aarch64 environment is not built in {env.root} (missing: {', '.join(missing)}): "
                         "run `bmcell setup-arm64` first")
    return env


def cpu_models(env: Arm64Environment) -> list[str]:
    """The CPU models this qemu-aarch64 emulates (`-cpu help`)."""
    listed = subprocess.run([str(env.qemu), "-cpu", "help"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines()[1:] if line.strip()]


def counting_environment() -> Arm64Environment:
    """The built environment with its instruction-counting plugin, or an Arm64Error in one line saying what to do."""
    env = ready_environment()
    if not environment_status(env)["counter"]:
        raise Arm64Error(f"no instruction-counting plugin in {env.root}: apt-get install qemu-user, then run "
                         "`bmcell setup-arm64` again")
    return env

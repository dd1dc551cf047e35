"""The wheel holds every module and data file of the mapped folders, and nothing else.

The suite itself runs on an editable install, which finds every folder whether or not the
wheel would; this test builds the wheel as pip does, from a clean copy of the checkout, and
compares its file list with the files git tracks under ``edge/``, ``convert/``,
``calibration/`` and ``systemd/``. The one addition allowed is the compiled frame loop
(setup.py's ``NATIVE``): exactly its extensions and the record of their sources' digests
when mypyc is installed, none without it or with ``EDGE_MER_PURE=1``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> where its files land in the wheel (pyproject's package-dir mapping).
MAPPING = {
    "edge": "edge_mer",
    "convert": "edge_mer/convert",
    "calibration": "edge_mer/calibration",
    "systemd": "edge_mer/systemd",
}


def _source_files() -> list[str]:
    """Every file of the checkout that git tracks or would track (what a clone holds)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the package's")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [rel for rel in out if (REPO / rel).is_file()]


def _package_files() -> set[str]:
    """Wheel paths of the files under the mapped folders."""
    expected = set()
    for rel in _source_files():
        folder, _, rest = rel.partition("/")
        if folder in MAPPING and rest:
            expected.add(f"{MAPPING[folder]}/{rest}")
    return expected


def _build_wheel(tmp_path_factory: pytest.TempPathFactory, **env: str) -> tuple[str, set[str]]:
    """(wheel file name, its paths) of the wheel pip builds from a clean copy."""
    # Build from a clean copy: setuptools reuses build/ in place, which would hide a
    # package that discovery stopped finding.
    src = tmp_path_factory.mktemp("src")
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    res = subprocess.run(
        [*cmd, "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = out.glob("edge_mer-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return wheel.name, {n for n in zf.namelist() if ".dist-info/" not in n}


def _native_sources() -> tuple[str, ...]:
    """The compiled modules' sources, relative to edge/ (setup.py compiles
    edge_mer.native.NATIVE_MODULES)."""
    from edge_mer.native import NATIVE_MODULES

    return tuple("/".join(name.split(".")[1:]) + ".py" for name in NATIVE_MODULES)


def _extensions(native: tuple[str, ...]) -> set[str]:
    """The wheel paths of the compiled frame loop on this interpreter."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    paths = {f"edge_mer/{rel.removesuffix('.py')}{suffix}" for rel in native}
    return paths | {f"edge_mer/_native__mypyc{suffix}", "edge_mer/_native_sources.txt"}


HAVE_MYPYC = importlib.util.find_spec("mypyc") is not None


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return _build_wheel(tmp_path_factory)[1]


def test_wheel_holds_every_package_file(wheel_files: set[str]) -> None:
    missing = sorted(_package_files() - wheel_files)
    assert not missing, f"left out of the wheel: {missing}"


def test_wheel_holds_nothing_else(wheel_files: set[str]) -> None:
    """Only the compiled frame loop, all of it, and only with mypyc installed."""
    extra = wheel_files - _package_files()
    allowed = _extensions(_native_sources()) if HAVE_MYPYC else set()
    assert extra == allowed, (
        f"in the wheel but not in the source tree: {sorted(extra - allowed)}; "
        f"compiled modules missing: {sorted(allowed - extra)}"
    )


def test_every_native_module_has_its_source() -> None:
    """What setup.py compiles (edge_mer.native's list, read from that file at build time)
    names modules that exist."""
    for rel in _native_sources():
        assert (REPO / "edge" / rel).is_file(), rel


def test_pure_build_has_no_compiled_code(tmp_path_factory: pytest.TempPathFactory) -> None:
    """EDGE_MER_PURE=1: the same files as the source tree, a wheel for any platform."""
    name, files = _build_wheel(tmp_path_factory, EDGE_MER_PURE="1")
    assert files == _package_files()
    assert name.endswith("-py3-none-any.whl"), name


def test_every_module_folder_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be skipped by discovery."""
    for folder in ("edge", "convert", "calibration"):
        for mod in (REPO / folder).rglob("*.py"):
            assert (mod.parent / "__init__.py").exists(), f"{mod.parent} has no __init__.py"
